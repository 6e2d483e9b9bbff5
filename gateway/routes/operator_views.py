"""Admin list views the console reads: an alias's rollouts and experiments as lists (empty
when it has none, where the single-resource routes answer 404, which browsers log as an error
on every look at a quiet alias), and the conversation log, searched and paged."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Request, get
from litestar.params import Parameter

from adapters.experiments import ExperimentController, experiment_card
from adapters.rollout import RolloutController
from gateway.history import LogQuery, search_log
from gateway.routes.rollouts import rollout_card

AliasName = Annotated[str, Parameter(min_length=1, max_length=64)]


@get("/v1/admin/rollouts", opt={"scope": "admin"}, tags=["admin"])
async def list_rollouts(alias: AliasName, rollouts: RolloutController) -> dict[str, Any]:
    """The alias's latest rollout with its history, as a list: empty when it has had none."""
    rollout, events = await rollouts.status(alias)
    return {"object": "list", "data": [rollout_card(rollout, events)] if rollout else []}


@get("/v1/admin/experiments", opt={"scope": "admin"}, tags=["admin"])
async def list_experiments(alias: AliasName, experiments: ExperimentController) -> dict[str, Any]:
    """The alias's latest experiment, as a list: empty when it has had none."""
    experiment = await experiments.status(alias)
    return {"object": "list", "data": [experiment_card(experiment)] if experiment else []}


@get("/v1/admin/conversations", opt={"scope": "admin"}, tags=["admin"])
async def search_conversations(
    request: Request[Any, Any, Any],
    q: Annotated[str | None, Parameter(max_length=500)] = None,
    key_id: Annotated[str | None, Parameter(max_length=32)] = None,
    model: Annotated[str | None, Parameter(max_length=200)] = None,
    status: Literal["ok", "error", "cancelled"] | None = None,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    offset: Annotated[int, Parameter(ge=0, le=2**31 - 1)] = 0,
) -> dict[str, Any]:
    """The conversation log, newest first: ``q`` matches text in the messages or the answer,
    or a completion or conversation id exactly."""
    db = request.app.state.services.db
    rows, total = await search_log(db, LogQuery(q or None, key_id, model, status, limit, offset))
    return {"object": "list", "total": total, "data": rows}


OPERATOR_VIEWS = [list_rollouts, list_experiments, search_conversations]
