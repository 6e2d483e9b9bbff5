"""The ``loragate`` command line, one module per command group. It mirrors the HTTP API;
each command loads the settings; errors of the packages leave through the one handler of
``gateway.cli.errors``."""

from __future__ import annotations

from pathlib import Path

import click

from core.logs import configure_logging
from core.settings import load_settings
from gateway.cli.errors import CommandGroup


@click.group(cls=CommandGroup)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="LORAGATE_CONFIG",
    help="TOML settings file (LORAGATE_* env vars override it).",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show every log line (commands other than the "
    "services show only progress, warnings and errors).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, verbose: bool) -> None:
    """loragate: an OpenAI-compatible gateway with hot-swappable LoRA adapters."""
    ctx.obj = load_settings(config_file)
    quiet = not verbose and ctx.invoked_subcommand not in SERVICES
    configure_logging(ctx.obj.logging.level, ctx.obj.logging.format, quiet=quiet)


# Long-running commands: they log as the server does, every line an operator may need.
SERVICES = frozenset({"serve", "trainer"})


def _add_commands() -> None:
    # One module per command group; each keeps its heavy imports inside its commands.
    from gateway.cli import (
        adapters,
        config,
        experiments,
        keys,
        retrieval,
        review,
        rollouts,
        serving,
    )
    from gateway.cli.monitor import COMMANDS as MONITOR_COMMANDS
    from gateway.cli.trainer import COMMANDS as TRAINER_COMMANDS

    commands = [
        serving.serve,
        serving.model,
        serving.engine,
        serving.doctor,
        keys.keys,
        adapters.adapters,
        rollouts.rollout,
        experiments.experiment,
        review.review,
        retrieval.ingest,
        retrieval.collections,
        retrieval.embedder,
        config.config,
        *TRAINER_COMMANDS,
        *MONITOR_COMMANDS,
    ]
    for command in commands:
        main.add_command(command)


_add_commands()
