"""``loragate config``: the settings and their documentation."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.settings import public_dump
from gateway.cli.common import settings_of
from gateway.cli.output import as_json_text, emit, json_output


@click.group()
def config() -> None:
    """Settings."""


@config.command("show")
@json_output
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings as JSON."""
    data = public_dump(settings_of(ctx))
    emit(data, as_json_text(data))


@config.command("docs")
@click.option(
    "--write",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Replace the table between the markers in this file instead of printing.",
)
def config_docs(path: Path | None) -> None:
    """Print the settings table in Markdown (docs/configuration.md is generated from it)."""
    from core.settings_docs import replace_table, settings_table

    if path is None:
        sys.stdout.write(settings_table())
    else:
        path.write_text(replace_table(path.read_text()))
        click.echo(f"updated {path}")
