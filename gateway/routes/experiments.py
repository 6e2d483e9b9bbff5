"""Admin API for A/B experiments: start one, read its results, stop it, promote its winner."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import get, post

from adapters.experiments import ExperimentController
from gateway.errors import NotFound
from gateway.presentation import experiment_card


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


@post("/v1/admin/experiments", opt={"scope": "admin"}, tags=["admin"], status_code=201)
async def start_experiment(
    data: StartExperiment, experiments: ExperimentController
) -> dict[str, Any]:
    """Split an alias's traffic evenly across arms until the sequential test decides."""
    started = await experiments.start(
        data.alias, data.arms, max_samples=data.max_samples,
        max_duration_s=data.max_duration_s, auto_promote=data.auto_promote,
    )  # fmt: skip
    return experiment_card(started)


@get("/v1/admin/experiments/{alias:str}", opt={"scope": "admin"}, tags=["admin"])
async def experiment_status(alias: str, experiments: ExperimentController) -> dict[str, Any]:
    """The alias's latest experiment: each arm's rate with its interval, and the decision."""
    experiment = await experiments.status(alias)
    if experiment is None:
        raise NotFound(f"Alias '{alias}' has had no experiment.", param="alias",
                       code="experiment_not_found")  # fmt: skip
    return experiment_card(experiment)


@post(
    "/v1/admin/experiments/{alias:str}/{action:str}", opt={"scope": "admin"}, tags=["admin"],
    status_code=200,
)  # fmt: skip
async def experiment_action(
    alias: str, action: Literal["stop", "promote"], experiments: ExperimentController
) -> dict[str, Any]:
    """Stop the running experiment, or promote a decided experiment's winner to live."""
    if action == "stop":
        return experiment_card(await experiments.stop(alias))
    return experiment_card(await experiments.promote(alias))
