"""``loragate experiment``: A/B experiments per alias."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from core.settings import Settings
from gateway.cli.common import settings_of, with_store
from gateway.cli.output import as_json_text, emit, json_output


@click.group()
def experiment() -> None:
    """A/B experiments: versions (or retrieval settings) of an alias on live traffic."""


def _experiment_command(ctx: click.Context, action: Callable[[Any], Any]) -> None:
    from gateway.presentation import experiment_card
    from gateway.wiring import adapter_registry, experiment_controller

    def build(settings: Settings, db: Any) -> Any:
        return experiment_controller(settings, db, adapter_registry(settings, db))

    card = experiment_card(with_store(settings_of(ctx), build, action))
    emit(card, as_json_text(card))


@experiment.command("start")
@click.argument("alias")
@click.option("--arms", required=True,
              help="Comma-separated: v3, support-v3, base, v4:no-retrieval, v4:collection=NAME. "
              "The first is the control.")  # fmt: skip
@click.option("--max-samples", type=click.IntRange(1), default=None,
              help="Rated answers per arm after which an undecided experiment stops.")  # fmt: skip
@click.option("--max-days", type=click.FloatRange(0, min_open=True), default=None,
              help="How long an undecided experiment runs at most.")  # fmt: skip
@click.option("--auto-promote", is_flag=True, help="Promote a winning version at once.")
@json_output
@click.pass_context
def experiment_start(
    ctx: click.Context, alias: str, arms: str, max_samples: int | None,
    max_days: float | None, auto_promote: bool,
) -> None:  # fmt: skip
    """Split ALIAS's traffic evenly across the arms, sticky per conversation."""
    specs = [arm for arm in arms.split(",") if arm.strip()]
    duration = max_days * 86_400 if max_days else None
    _experiment_command(ctx, lambda controller: controller.start(
        alias, specs, max_samples=max_samples, max_duration_s=duration,
        auto_promote=auto_promote,
    ))  # fmt: skip


@experiment.command("status")
@click.argument("alias")
@json_output
@click.pass_context
def experiment_status(ctx: click.Context, alias: str) -> None:
    """The alias's latest experiment: each arm's rate and interval, and the decision."""

    async def status(controller: Any) -> Any:
        found = await controller.status(alias)
        if found is None:
            from adapters.experiments import ExperimentError

            raise ExperimentError(f"alias {alias} has had no experiment")
        return found

    _experiment_command(ctx, status)


@experiment.command("stop")
@click.argument("alias")
@json_output
@click.pass_context
def experiment_stop(ctx: click.Context, alias: str) -> None:
    """Stop ALIAS's running experiment without a winner."""
    _experiment_command(ctx, lambda controller: controller.stop(alias))


@experiment.command("promote")
@click.argument("alias")
@json_output
@click.pass_context
def experiment_promote(ctx: click.Context, alias: str) -> None:
    """Make the decided experiment's winning version ALIAS's live version."""
    _experiment_command(ctx, lambda controller: controller.promote(alias))
