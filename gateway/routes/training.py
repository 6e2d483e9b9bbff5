"""Admin API of the trainer's runs: what the console's Training tab reads."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import Parameter

from gateway.presentation import training_run_card
from trainer.store import TrainerStore


class TrainingRoutes(Controller):
    """Training runs with their reports (admin)."""

    path = "/v1/admin/training"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @get("/runs")
    async def list_training_runs(
        self,
        trainer_store: TrainerStore,
        alias: Annotated[str | None, Parameter(max_length=200)] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 20,
    ) -> dict[str, Any]:
        """Training runs, newest first, each with its report: the dataset, the training, the
        candidate's and the live version's scores, and the gate's verdict (the per-item
        holdout answers are left out: ``loragate train`` prints them)."""
        runs = await trainer_store.runs(alias, limit)
        return {"object": "list", "data": [training_run_card(run) for run in runs]}
