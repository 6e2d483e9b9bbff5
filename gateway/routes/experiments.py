"""Admin API for A/B experiments: start one, read its results, stop it, promote its winner."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get, post

from adapters.experiments import ExperimentController
from gateway.errors import NotFound
from gateway.presentation import experiment_card
from gateway.routes.rollouts import AliasQuery


class StartExperiment(msgspec.Struct, forbid_unknown_fields=True):
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]
    # "v3", "support-v3", "base", each optionally ":no-retrieval" or ":collection=NAME"
    arms: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
        msgspec.Meta(min_length=2, max_length=8),
    ]
    max_samples: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    max_duration_s: Annotated[float, msgspec.Meta(gt=0, le=365 * 86_400)] | None = None
    auto_promote: bool = False


class ExperimentRoutes(Controller):
    """A/B experiments per alias (admin)."""

    path = "/v1/admin/experiments"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @post("/", status_code=201)
    async def start_experiment(
        self, data: StartExperiment, experiments: ExperimentController
    ) -> dict[str, Any]:
        """Split an alias's traffic evenly across arms until the sequential test decides."""
        started = await experiments.start(
            data.alias, data.arms, max_samples=data.max_samples,
            max_duration_s=data.max_duration_s, auto_promote=data.auto_promote,
        )  # fmt: skip
        return experiment_card(started)

    @get("/")
    async def list_experiments(
        self, alias: AliasQuery, experiments: ExperimentController
    ) -> dict[str, Any]:
        """The alias's latest experiment, as a list: empty when it has had none."""
        experiment = await experiments.status(alias)
        return {"object": "list", "data": [experiment_card(experiment)] if experiment else []}

    @get("/{alias:str}")
    async def experiment_status(
        self, alias: str, experiments: ExperimentController
    ) -> dict[str, Any]:
        """The alias's latest experiment: each arm's rate with its interval, and the decision."""
        experiment = await experiments.status(alias)
        if experiment is None:
            raise NotFound(f"Alias '{alias}' has had no experiment.", param="alias",
                           code="experiment_not_found")  # fmt: skip
        return experiment_card(experiment)

    @post("/{alias:str}/{action:str}", status_code=200)
    async def experiment_action(
        self, alias: str, action: Literal["stop", "promote"], experiments: ExperimentController
    ) -> dict[str, Any]:
        """Stop the running experiment, or promote a decided experiment's winner to live."""
        if action == "stop":
            return experiment_card(await experiments.stop(alias))
        return experiment_card(await experiments.promote(alias))
