"""``loragate review``: the review queue of flagged completions."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import click

from core.settings import Settings
from gateway.cli.common import settings_of, with_store
from gateway.cli.output import as_json_text, emit, json_output

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
@json_output
@click.pass_context
def review_list(
    ctx: click.Context, state: str, alias: str | None, reason: str | None, limit: int
) -> None:
    """List flagged completions."""
    from gateway.presentation import item_card
    from gateway.review import ReviewFilter

    where = ReviewFilter(None if state == "all" else state, alias, reason, limit)
    items, total = _review(ctx, lambda queue: queue.list(where))
    cards = [item_card(item) for item, _ in items]

    def text() -> None:
        for card in cards:
            reasons = ",".join(card["reasons"])
            click.echo(f"{card['id']}\t{card['state']}\t{card['alias']}\t{reasons}\t"
                       f"{card['completion_id']}")  # fmt: skip
        click.echo(f"{len(cards)} of {total}", err=True)

    emit({"data": cards, "total": total}, text)


@review.command("show")
@click.argument("item_id", type=int)
@json_output
@click.pass_context
def review_show(ctx: click.Context, item_id: int) -> None:
    """Show one item with its conversation and answer."""
    from gateway.presentation import item_card

    item, conversation = _review(ctx, lambda queue: queue.show(item_id))
    card = item_card(item, conversation)
    emit(card, as_json_text(card))


def _decide(
    ctx: click.Context,
    item_id: int,
    state: Literal["approved", "rejected"],
    revision: str | None,
    correction: str | None = None,
    note: str | None = None,
    text: Callable[[Any], None] | None = None,
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

    from gateway.presentation import item_card

    item = _review(ctx, decide)

    def lines() -> None:
        click.echo(f"{item.id} {item.state}")
        if text is not None:
            text(item)

    emit(item_card(item), lines)
    return item


_REVISION_HELP = "The revision `review show` printed: refused if the item changed since."


@review.command("approve")
@click.argument("item_id", type=int)
@click.option("--revision", default=None, help=_REVISION_HELP)
@click.option("--correction", default=None, help="Replace the correction before approving.")
@click.option("--note", default=None)
@json_output
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

    def approved(item: Any) -> None:
        reply = item.correction or "(no correction: the answer as served is trained on)"
        click.echo(f"approved reply: {reply}", err=True)

    _decide(ctx, item_id, "approved", revision, correction, note, text=approved)


@review.command("reject")
@click.argument("item_id", type=int)
@click.option("--revision", default=None, help=_REVISION_HELP)
@click.option("--note", default=None)
@json_output
@click.pass_context
def review_reject(ctx: click.Context, item_id: int, revision: str | None, note: str | None) -> None:
    """Reject an item: it never reaches training."""
    _decide(ctx, item_id, "rejected", revision, note=note)


@review.command("edit")
@click.argument("item_id", type=int)
@click.option("--correction", required=True, help="The reply the model should have given.")
@click.option("--note", default=None)
@json_output
@click.pass_context
def review_edit(ctx: click.Context, item_id: int, correction: str, note: str | None) -> None:
    """Edit a pending item's correction."""
    from gateway.presentation import item_card

    item = _review(ctx, lambda queue: queue.edit(item_id, correction, note))
    emit(item_card(item), f"{item.id} {item.state}: correction updated")


@review.command("flag")
@click.argument("completion_id")
@click.option("--note", default="", help="Why it is flagged.")
@click.option("--correction", default=None)
@json_output
@click.pass_context
def review_flag(ctx: click.Context, completion_id: str, note: str, correction: str | None) -> None:
    """Flag a completion by hand (reason operator_flag)."""
    item_id = _review(ctx, lambda queue: queue.flag(completion_id, note, correction))
    emit({"id": item_id, "completion_id": completion_id}, f"review item {item_id}")
