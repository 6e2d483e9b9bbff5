"""Admin API for canary rollouts: start, watch, and the manual overrides."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import get, post

from adapters.rollout import RolloutController
from adapters.tables import Rollout, RolloutEvent
from gateway.errors import NotFound


class StartRollout(msgspec.Struct):
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    steps: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=100)]],
                     msgspec.Meta(min_length=1, max_length=20)] | None = None  # fmt: skip
    again: bool = False  # deliberately roll out a version that was rolled back before

    def __post_init__(self) -> None:
        # msgspec turns this into a 400 naming the body, like its own checks.
        if self.steps and (self.steps != sorted(set(self.steps)) or self.steps[-1] != 100):
            raise ValueError("steps must rise and end at 100")


def rollout_card(rollout: Rollout, events: list[RolloutEvent] | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": rollout.id, "alias": rollout.alias, "candidate": rollout.candidate,
        "baseline": rollout.baseline, "state": rollout.state, "steps": rollout.steps,
        "step": rollout.step, "weight": rollout.weight, "failures": rollout.failures,
        "reason": rollout.reason, "started_at": rollout.started_at.isoformat(),
    }  # fmt: skip
    if events is not None:
        card["history"] = [
            {"kind": event.kind, "detail": event.detail, "at": event.created_at.isoformat()}
            for event in events
        ]
    return card


@post("/v1/admin/rollouts", opt={"scope": "admin"}, tags=["admin"], status_code=201)
async def start_rollout(data: StartRollout, rollouts: RolloutController) -> dict[str, Any]:
    """Start a canary rollout of a candidate version (or, with ``again``, of one that was
    rolled back before)."""
    steps = tuple(data.steps) if data.steps else None
    return rollout_card(await rollouts.start(data.alias, data.version, steps, again=data.again))


@get("/v1/admin/rollouts/{alias:str}", opt={"scope": "admin"}, tags=["admin"])
async def rollout_status(alias: str, rollouts: RolloutController) -> dict[str, Any]:
    """The alias's latest rollout with its step, weight and gate history."""
    rollout, events = await rollouts.status(alias)
    if rollout is None:
        raise NotFound(f"Alias '{alias}' has had no rollout.", param="alias")
    return rollout_card(rollout, events)


@post(
    "/v1/admin/rollouts/{alias:str}/{action:str}", opt={"scope": "admin"}, tags=["admin"],
    status_code=200,
)  # fmt: skip
async def rollout_action(
    alias: str,
    action: Literal["promote", "rollback", "pause", "resume"],
    rollouts: RolloutController,
) -> dict[str, Any]:
    """Promote, roll back, pause or resume the alias's rollout by hand."""
    commands = {"promote": rollouts.promote, "rollback": rollouts.rollback,
                "pause": rollouts.pause, "resume": rollouts.resume}  # fmt: skip
    return rollout_card(await commands[action](alias))
