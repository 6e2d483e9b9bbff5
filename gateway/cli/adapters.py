"""``loragate adapters``: publish, list and show versions; declare aliases."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from core.settings import Settings
from gateway.cli.common import settings_of, with_store

T = TypeVar("T")


@click.group()
def adapters() -> None:
    """LoRA adapter versions."""


def _with_registry(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from gateway.wiring import adapter_registry

    return with_store(settings, adapter_registry, action)


@adapters.command("publish")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--alias", required=True, help="Alias the version belongs to, e.g. support.")
@click.pass_context
def adapters_publish(ctx: click.Context, path: Path, alias: str) -> None:
    """Validate a PEFT LoRA directory and store it as <alias>-v<N>."""

    published = _with_registry(settings_of(ctx), lambda registry: registry.publish(path, alias))
    verb = "published" if published.created else "already published as"
    click.echo(f"{verb} {published.version.name} ({published.version.state})")


@adapters.command("sample")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@click.option("--rank", default=4, show_default=True, help="LoRA rank.")
@click.pass_context
def adapters_sample(ctx: click.Context, target: Path, seed: int, rank: int) -> None:
    """Write a sample LoRA for the base model (random weights, no training) to TARGET, to
    try publishing and rollouts before the trainer has made a real adapter."""
    from trainer.sample import sample_adapter

    if target.exists() and any(target.iterdir()):
        raise click.ClickException(f"{target} exists and is not empty")
    base = settings_of(ctx).resolved_base_model_path
    sample_adapter(target, base, seed=seed, rank=rank)
    click.echo(f"sample adapter for {base.name} (rank {rank}, seed {seed}) written to {target}")


@adapters.command("list")
@click.option("--alias", default=None)
@click.pass_context
def adapters_list(ctx: click.Context, alias: str | None) -> None:
    """List versions with their state."""
    versions = _with_registry(settings_of(ctx), lambda registry: registry.versions(alias))
    for version in versions:
        click.echo(f"{version.name}\t{version.state}\trank={version.rank}\t{version.sha256[:12]}")


@adapters.command("show")
@click.argument("version")
@click.pass_context
def adapters_show(ctx: click.Context, version: str) -> None:
    """Show one version, with its eval report."""
    from gateway.presentation import version_card

    row = _with_registry(settings_of(ctx), lambda registry: registry.get(version))
    click.echo(json.dumps(version_card(row), indent=2, default=str))


@adapters.command("alias")
@click.argument("alias")
@click.pass_context
def adapters_alias(ctx: click.Context, alias: str) -> None:
    """Declare ALIAS before its first version; it serves the base model meanwhile."""

    created = _with_registry(settings_of(ctx), lambda registry: registry.create_alias(alias))
    click.echo(f"alias {alias} {'created' if created else 'already exists'}")
