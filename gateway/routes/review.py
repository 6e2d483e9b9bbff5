"""Admin API for the review queue: list, show, approve or reject, edit, flag by hand."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.params import Parameter

from gateway.action_limits import check_action
from gateway.presentation import item_card
from gateway.quota_gate import QuotaGate
from gateway.review import ReviewFilter, ReviewQueue

ItemId = Annotated[int, Parameter(ge=1, le=2**31 - 1)]  # the id column is 32-bit


class DecisionIn(msgspec.Struct, forbid_unknown_fields=False):
    decision: Literal["approve", "reject"]
    # The card's revision the reviewer decided on: a decision on an item that changed since is
    # refused (409). Required to approve without sending a correction (gateway.review).
    revision: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    correction: str | None = None  # replaces the stored one; its length is checked in review
    note: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class ReopenIn(msgspec.Struct, forbid_unknown_fields=False):
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]  # why: it is logged


class EditIn(msgspec.Struct, forbid_unknown_fields=False):
    correction: str
    note: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class FlagIn(msgspec.Struct, forbid_unknown_fields=False):
    completion_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    note: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    correction: str | None = None


def _reviewer(request: Request[Any, Any, Any]) -> str:
    principal = getattr(request.state, "principal", None)
    return f"key:{principal.key_id}" if principal and principal.key_id else "admin"


class ReviewRoutes(Controller):
    """The review queue of flagged completions (admin)."""

    path = "/v1/admin/review"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @get("/")
    async def list_review(
        self,
        review: ReviewQueue,
        review_state: Annotated[str | None, Parameter(query="state")] = "pending",
        alias: str | None = None,
        reason: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=2**31 - 1)] = 0,
        conversations: Annotated[
            bool, Parameter(description="Include each item's messages and answer.")
        ] = False,
    ) -> dict[str, Any]:
        """Flagged completions, filtered by state (default pending), alias and reason."""
        where = ReviewFilter(review_state or None, alias, reason, limit, offset)
        items, total = await review.list(where, with_conversations=conversations)
        cards = [item_card(item, conversation) for item, conversation in items]
        return {"object": "list", "total": total, "data": cards}

    @get("/{item_id:int}")
    async def show_review(self, item_id: ItemId, review: ReviewQueue) -> dict[str, Any]:
        """One item with the conversation as served and the answer."""
        item, conversation = await review.show(item_id)
        return item_card(item, conversation)

    @post("/{item_id:int}/decision", status_code=200)
    async def decide_review(
        self,
        item_id: ItemId,
        data: DecisionIn,
        review: ReviewQueue,
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """Approve (optionally with an edited correction) or reject the item at ``revision``.

        409 ``review_item_changed`` if the item is no longer at that revision (a user posted a
        newer correction, or someone decided it); 409 ``review_item_decided`` if it was decided
        already (decisions are final; reopen it first); 400 ``revision_required`` for an approval
        with neither a revision nor a correction of its own."""
        state: Literal["approved", "rejected"] = (
            "approved" if data.decision == "approve" else "rejected"
        )
        item = await review.decide(
            item_id,
            state,
            reviewer=_reviewer(request),
            seen=data.revision,
            correction=data.correction,
            note=data.note,
        )
        return item_card(item)

    @post("/{item_id:int}/reopen", status_code=200)
    async def reopen_review(
        self, item_id: ItemId, data: ReopenIn, review: ReviewQueue, request: Request[Any, Any, Any]
    ) -> dict[str, Any]:
        """Make a decided item pending again (logged with who, why and the old decision), so it
        can be decided anew. 409 ``review_item_pending`` if it is pending already."""
        return item_card(await review.reopen(item_id, reviewer=_reviewer(request), note=data.note))

    @patch("/{item_id:int}")
    async def edit_review(
        self, item_id: ItemId, data: EditIn, review: ReviewQueue
    ) -> dict[str, Any]:
        """Edit a pending item's correction before deciding."""
        return item_card(await review.edit(item_id, data.correction, data.note))

    @post("/", status_code=201)
    async def flag_completion(
        self, data: FlagIn, review: ReviewQueue, quotas: QuotaGate, request: Request[Any, Any, Any]
    ) -> dict[str, Any]:
        """Flag a completion by hand (reason ``operator_flag``); counts as the key's feedback."""
        await check_action(quotas, request.state.principal, "feedback")
        item_id = await review.flag(data.completion_id, data.note, data.correction)
        item, _ = await review.show(item_id)
        return item_card(item)
