"""``loragate review``: the review queue of flagged completions."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import click

from core.settings import Settings
from gateway.cli.common import settings_of, with_store

T = TypeVar("T")


@click.group()
def review() -> None:
    """The review queue of flagged completions."""


def _review(ctx: click.Context, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from core.store.conversations import ConversationLog
    from gateway.review import ReviewQueue
    from gateway.wiring import flagger

    settings = settings_of(ctx)

    def build(_: Settings, db: Any) -> ReviewQueue:
        return ReviewQueue(db, flagger(settings, db), ConversationLog(db))

    return with_store(settings, build, action)


@review.command("list")
@click.option(
    "--state",
    default="pending",
    show_default=True,
    type=click.Choice(["pending", "approved", "rejected", "all"]),
)
@click.option("--alias", default=None)
@click.option("--reason", default=None)
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def review_list(
    ctx: click.Context, state: str, alias: str | None, reason: str | None, limit: int
) -> None:
    """List flagged completions."""
    from gateway.review import ReviewFilter

    where = ReviewFilter(None if state == "all" else state, alias, reason, limit)
    items, total = _review(ctx, lambda queue: queue.list(where))
    for item, _ in items:
        reasons = ",".join(reason["reason"] for reason in item.reasons)
        click.echo(
            f"{item.id}	{item.state}	{item.alias}	{reasons}	{item.completion_id}"
        )
    click.echo(f"{len(items)} of {total}", err=True)


@review.command("show")
@click.argument("item_id", type=int)
@click.pass_context
def review_show(ctx: click.Context, item_id: int) -> None:
    """Show one item with its conversation and answer."""
    from gateway.presentation import item_card

    item, conversation = _review(ctx, lambda queue: queue.show(item_id))
    click.echo(json.dumps(item_card(item, conversation), indent=2, default=str))


def _decide(
    ctx: click.Context,
    item_id: int,
    state: Literal["approved", "rejected"],
    revision: str | None,
    correction: str | None = None,
    note: str | None = None,
) -> Any:
    """Decide on the item at ``revision``, or as read here and now: never on a correction
    that arrived after what the operator was shown."""
    from gateway.review import revision as revision_of

    async def decide(queue: Any) -> Any:
        item, _ = await queue.show(item_id)
        seen = revision or revision_of(item)
        return await queue.decide(
            item_id, state, reviewer="cli", seen=seen, correction=correction, note=note
        )

    item = _review(ctx, decide)
    click.echo(f"{item.id} {item.state}")
    return item


_REVISION_HELP = "The revision `review show` printed: refused if the item changed since."


@review.command("approve")
@click.argument("item_id", type=int)
@click.option("--revision", default=None, help=_REVISION_HELP)
@click.option("--correction", default=None, help="Replace the correction before approving.")
@click.option("--note", default=None)
@click.pass_context
def review_approve(
    ctx: click.Context,
    item_id: int,
    revision: str | None,
    correction: str | None,
    note: str | None,
) -> None:
    """Approve an item for training (with its correction, or the answer as served) as it
    is now, or at --revision; the reply approved is printed to stderr."""
    item = _decide(ctx, item_id, "approved", revision, correction, note)
    approved = item.correction or "(no correction: the answer as served is trained on)"
    click.echo(f"approved reply: {approved}", err=True)


@review.command("reject")
@click.argument("item_id", type=int)
@click.option("--revision", default=None, help=_REVISION_HELP)
@click.option("--note", default=None)
@click.pass_context
def review_reject(ctx: click.Context, item_id: int, revision: str | None, note: str | None) -> None:
    """Reject an item: it never reaches training."""
    _decide(ctx, item_id, "rejected", revision, note=note)


@review.command("edit")
@click.argument("item_id", type=int)
@click.option("--correction", required=True, help="The reply the model should have given.")
@click.option("--note", default=None)
@click.pass_context
def review_edit(ctx: click.Context, item_id: int, correction: str, note: str | None) -> None:
    """Edit a pending item's correction."""
    item = _review(ctx, lambda queue: queue.edit(item_id, correction, note))
    click.echo(f"{item.id} {item.state}: correction updated")


@review.command("flag")
@click.argument("completion_id")
@click.option("--note", default="", help="Why it is flagged.")
@click.option("--correction", default=None)
@click.pass_context
def review_flag(ctx: click.Context, completion_id: str, note: str, correction: str | None) -> None:
    """Flag a completion by hand (reason operator_flag)."""
    item_id = _review(ctx, lambda queue: queue.flag(completion_id, note, correction))
    click.echo(f"review item {item_id}")
