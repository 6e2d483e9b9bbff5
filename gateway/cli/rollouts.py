"""``loragate rollout``: canary rollouts per alias."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from core.settings import Settings
from gateway.cli.common import settings_of, with_store
from gateway.cli.output import as_json_text, emit, json_output

T = TypeVar("T")


@click.group()
def rollout() -> None:
    """Canary rollouts of adapter versions."""


def _with_rollouts(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from gateway.wiring import rollout_controller

    return with_store(settings, rollout_controller, action)


def _rollout_command(ctx: click.Context, action: Callable[[Any], Any]) -> None:
    from gateway.presentation import rollout_card

    result = _with_rollouts(settings_of(ctx), action)
    card = rollout_card(*result) if isinstance(result, tuple) else rollout_card(result)
    emit(card, as_json_text(card))


@rollout.command("start")
@click.argument("alias")
@click.argument("version")
@click.option("--steps", default=None, help="Comma-separated percentages, e.g. 10,25,50,100.")
@click.option(
    "--again",
    is_flag=True,
    help="Roll out a version that was rolled back before, deliberately (once the cause is "
    "fixed); without it such a version is refused. The history records it.",
)
@json_output
@click.pass_context
def rollout_start(
    ctx: click.Context, alias: str, version: str, steps: str | None, again: bool
) -> None:
    """Start a canary rollout of VERSION under ALIAS."""
    parsed = tuple(int(step) for step in steps.split(",")) if steps else None
    _rollout_command(ctx, lambda controller: controller.start(alias, version, parsed, again=again))


@rollout.command("status")
@click.argument("alias")
@json_output
@click.pass_context
def rollout_status(ctx: click.Context, alias: str) -> None:
    """Show the alias's latest rollout and its history."""

    async def status(controller: Any) -> Any:
        rollout, events = await controller.status(alias)
        if rollout is None:
            from adapters.rollout import RolloutError

            raise RolloutError(f"alias {alias} has had no rollout")
        return rollout, events

    _rollout_command(ctx, status)


def _rollout_override(name: str, help_text: str) -> None:
    @rollout.command(name, help=help_text)
    @click.argument("alias")
    @json_output
    @click.pass_context
    def command(ctx: click.Context, alias: str) -> None:
        _rollout_command(ctx, lambda controller: getattr(controller, name)(alias))


for _name, _help in (("promote", "Promote the canary now."), ("rollback", "Roll back now."),
                     ("pause", "Freeze the rollout at its step."),
                     ("resume", "Resume a paused rollout.")):  # fmt: skip
    _rollout_override(_name, _help)
