"""Admin list views the console reads: an alias's rollouts and experiments as lists (empty
when it has none, where the single-resource routes answer 404, which browsers log as an error
on every look at a quiet alias), the conversation log, searched and paged, and the training
runs with their reports."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Request, get
from litestar.params import Parameter
from sqlalchemy import select

from adapters.experiments import ExperimentController, experiment_card
from adapters.rollout import RolloutController
from gateway.history import LogQuery, search_log
from gateway.routes.rollouts import rollout_card
from trainer.tables import TrainingRun

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


@get("/v1/admin/training/runs", opt={"scope": "admin"}, tags=["admin"])
async def list_training_runs(
    request: Request[Any, Any, Any],
    alias: Annotated[str | None, Parameter(max_length=200)] = None,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 20,
) -> dict[str, Any]:
    """Training runs, newest first, each with its report: the dataset, the training, the
    candidate's and the live version's scores, and the gate's verdict (the per-item holdout
    answers are left out: ``loragate train`` prints them)."""
    query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    if alias:
        query = query.where(TrainingRun.alias == alias)
    async with request.app.state.services.db.sessions() as session:
        runs = list(await session.scalars(query))
    return {"object": "list", "data": [_run_card(run) for run in runs]}


def _run_card(run: TrainingRun) -> dict[str, Any]:
    report = {key: value for key, value in (run.report or {}).items() if key != "holdout_items"}
    return {
        "id": run.id, "alias": run.alias, "state": run.state, "trigger": run.trigger,
        "worker": run.worker, "approved_examples": run.approved_examples,
        "candidate": run.candidate, "error": run.error, "report": report or None,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }  # fmt: skip


OPERATOR_VIEWS = [list_rollouts, list_experiments, search_conversations, list_training_runs]
