"""How resources look to a client: the JSON cards of the HTTP API, which the CLI prints too.

One function per resource, so ``GET /v1/admin/rollouts/{alias}`` and ``loragate rollout
status`` cannot disagree about what a rollout shows.
"""

from __future__ import annotations

from typing import Any

from adapters.tables import AdapterVersion, Experiment, Rollout, RolloutEvent
from core.store.tables import Conversation, ReviewItem
from gateway.review import revision
from trainer.tables import TrainingRun


def version_card(version: AdapterVersion) -> dict[str, Any]:
    return {
        "name": version.name, "alias": version.alias, "number": version.number,
        "state": version.state, "parent": version.parent, "sha256": version.sha256,
        "rank": version.rank, "target_modules": version.target_modules,
        "size_bytes": version.size_bytes, "path": version.path,
        "eval_report": version.eval_report,
        "created_at": version.created_at.isoformat(),
    }  # fmt: skip


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


def experiment_card(experiment: Experiment) -> dict[str, Any]:
    return {
        "id": experiment.id, "alias": experiment.alias, "state": experiment.state,
        "arms": [{key: arm[key] for key in ("name", "version", "retrieval")}
                 for arm in experiment.arms],
        "max_samples": experiment.max_samples, "auto_promote": experiment.auto_promote,
        "winner": experiment.winner, "reason": experiment.reason,
        "results": experiment.results, "started_at": experiment.started_at.isoformat(),
        "ends_at": experiment.ends_at.isoformat(),
        "finished_at": experiment.finished_at.isoformat() if experiment.finished_at else None,
    }  # fmt: skip


def item_card(item: ReviewItem, conversation: Conversation | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": item.id,
        "revision": revision(item),
        "completion_id": item.completion_id,
        "alias": item.alias,
        "served_model": item.served_model,
        "state": item.state,
        "reasons": [reason["reason"] for reason in item.reasons],
        "correction": item.correction,
        "reviewer": item.reviewer,
        "note": item.note,
        "created_at": item.created_at.isoformat(),
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
    }
    if conversation is not None:
        card["reason_details"] = item.reasons
        card["messages"] = conversation.request.get("messages", [])
        card["answer"] = conversation.response[0]["content"] if conversation.response else ""
        card["groundedness"] = conversation.groundedness
    return card


def training_run_card(run: TrainingRun) -> dict[str, Any]:
    """A run with its report, less the per-item holdout answers (``loragate train`` prints
    those)."""
    report = {key: value for key, value in (run.report or {}).items() if key != "holdout_items"}
    return {
        "id": run.id, "alias": run.alias, "state": run.state, "trigger": run.trigger,
        "worker": run.worker, "approved_examples": run.approved_examples,
        "candidate": run.candidate, "error": run.error, "report": report or None,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }  # fmt: skip
