"""Admin API for canary rollouts: start, watch, and the manual overrides."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get, post
from litestar.params import Parameter

from adapters.rollout import RolloutController
from core.rollout_steps import check_rollout_steps
from gateway.errors import NotFound
from gateway.presentation import rollout_card

AliasQuery = Annotated[str, Parameter(min_length=1, max_length=64)]


class StartRollout(msgspec.Struct):
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    steps: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=100)]],
                     msgspec.Meta(min_length=1, max_length=20)] | None = None  # fmt: skip
    again: bool = False  # deliberately roll out a version that was rolled back before

    def __post_init__(self) -> None:
        # msgspec turns this into a 400 naming the body, like its own checks.
        if self.steps:
            check_rollout_steps(self.steps)


class RolloutRoutes(Controller):
    """Canary rollouts per alias (admin)."""

    path = "/v1/admin/rollouts"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @post("/", status_code=201)
    async def start_rollout(
        self, data: StartRollout, rollouts: RolloutController
    ) -> dict[str, Any]:
        """Start a canary rollout of a candidate version (or, with ``again``, of one that was
        rolled back before)."""
        steps = tuple(data.steps) if data.steps else None
        return rollout_card(await rollouts.start(data.alias, data.version, steps, again=data.again))

    @get("/")
    async def list_rollouts(self, alias: AliasQuery, rollouts: RolloutController) -> dict[str, Any]:
        """The alias's latest rollout with its history, as a list: empty when it has had none
        (where the single-resource route answers 404, which a browser logs as an error)."""
        rollout, events = await rollouts.status(alias)
        return {"object": "list", "data": [rollout_card(rollout, events)] if rollout else []}

    @get("/{alias:str}")
    async def rollout_status(self, alias: str, rollouts: RolloutController) -> dict[str, Any]:
        """The alias's latest rollout with its step, weight and gate history."""
        rollout, events = await rollouts.status(alias)
        if rollout is None:
            raise NotFound(f"Alias '{alias}' has had no rollout.", param="alias")
        return rollout_card(rollout, events)

    @post("/{alias:str}/{action:str}", status_code=200)
    async def rollout_action(
        self,
        alias: str,
        action: Literal["promote", "rollback", "pause", "resume"],
        rollouts: RolloutController,
    ) -> dict[str, Any]:
        """Promote, roll back, pause or resume the alias's rollout by hand."""
        commands = {"promote": rollouts.promote, "rollback": rollouts.rollback,
                    "pause": rollouts.pause, "resume": rollouts.resume}  # fmt: skip
        return rollout_card(await commands[action](alias))
