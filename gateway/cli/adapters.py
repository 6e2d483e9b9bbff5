"""``loragate adapters``: publish, list and show versions; declare aliases."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from core.settings import Settings
from gateway.cli.common import settings_of, with_store
from gateway.cli.output import as_json_text, emit, json_output

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
@json_output
@click.pass_context
def adapters_publish(ctx: click.Context, path: Path, alias: str) -> None:
    """Validate a PEFT LoRA directory and store it as <alias>-v<N>."""
    from gateway.presentation import version_card

    published = _with_registry(settings_of(ctx), lambda registry: registry.publish(path, alias))
    verb = "published" if published.created else "already published as"
    card = {**version_card(published.version), "created": published.created}
    emit(card, f"{verb} {published.version.name} ({published.version.state})")


@adapters.command("sample")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@click.option("--rank", default=4, show_default=True, help="LoRA rank.")
@json_output
@click.pass_context
def adapters_sample(ctx: click.Context, target: Path, seed: int, rank: int) -> None:
    """Write a sample LoRA for the base model (random weights, no training) to TARGET, to
    try publishing and rollouts before the trainer has made a real adapter."""
    from trainer.sample import sample_adapter

    if target.exists() and any(target.iterdir()):
        raise click.ClickException(f"{target} exists and is not empty")
    base = settings_of(ctx).resolved_base_model_path
    sample_adapter(target, base, seed=seed, rank=rank)
    card = {"path": str(target), "base": base.name, "rank": rank, "seed": seed}
    emit(card, f"sample adapter for {base.name} (rank {rank}, seed {seed}) written to {target}")


@adapters.command("list")
@click.option("--alias", default=None)
@json_output
@click.pass_context
def adapters_list(ctx: click.Context, alias: str | None) -> None:
    """List versions with their state."""
    from gateway.presentation import version_card

    versions = _with_registry(settings_of(ctx), lambda registry: registry.versions(alias))

    def text() -> None:
        for v in versions:
            click.echo(f"{v.name}\t{v.state}\trank={v.rank}\t{v.sha256[:12]}")

    emit([version_card(version) for version in versions], text)


@adapters.command("show")
@click.argument("version")
@json_output
@click.pass_context
def adapters_show(ctx: click.Context, version: str) -> None:
    """Show one version, with its eval report."""
    from gateway.presentation import version_card

    row = _with_registry(settings_of(ctx), lambda registry: registry.get(version))
    card = version_card(row)
    emit(card, as_json_text(card))


@adapters.command("alias")
@click.argument("alias")
@json_output
@click.pass_context
def adapters_alias(ctx: click.Context, alias: str) -> None:
    """Declare ALIAS before its first version; it serves the base model meanwhile."""

    created = _with_registry(settings_of(ctx), lambda registry: registry.create_alias(alias))
    emit({"alias": alias, "created": created},
         f"alias {alias} {'created' if created else 'already exists'}")  # fmt: skip
