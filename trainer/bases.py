"""Base-model selection on the operator's own data: which base reaches a target holdout
accuracy with the fewest examples?

``loragate eval bases ALIAS --candidate NAME=URL[@PATH] ...`` takes one vLLM server per
candidate base (started with ``--enable-lora``) and, for each:

1. checks the server answers and serves a base model, and that the base's weights (the
   ``root`` the server reports, or ``@PATH``) are readable here with a tokenizer that loads:
   an adapter is trained on them and then loaded into that server;
2. scores the base alone on the alias's holdout, asked as it is served today (re-grounded in
   the alias's collection), through that server;
3. trains an adapter on 25%, 50% and 100% of the alias's curated training examples (the
   same stable order each time, so each set contains the smaller ones) and scores each on
   the same holdout.

The answer is the sample-efficiency curve of each base, and the base that first reaches
``--target`` accuracy with the fewest examples (ties: the higher accuracy at 100%). The
report goes to ``DATA_DIR/reports/``; nothing is published and the split is not changed.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import httpx

from adapters.supervisor import served_chat_template
from core.progress import Progress
from trainer.dataset import Example
from trainer.errors import TrainerError
from trainer.evaluate import Evaluator
from trainer.job import TrainingJob
from trainer.qlora import load_tokenizer, train
from trainer.regrounder import Regrounder
from trainer.store import TrainerStore
from trainer.tables import utcnow

log = logging.getLogger("loragate.bases")

FRACTIONS = (0.25, 0.5, 1.0)
_CANDIDATE = re.compile(r"^(?P<name>[\w.-]+)=(?P<url>https?://[^@\s]+)(?:@(?P<path>.+))?$")


class CandidateError(TrainerError):
    """A candidate base that cannot be compared; the message names it and says why."""


@dataclass(frozen=True)
class Candidate:
    name: str  # a label for the report
    url: str  # the vLLM server's base URL
    path: Path | None = None  # its weights, when the server's own path is not readable here


def parse_candidate(text: str) -> Candidate:
    match = _CANDIDATE.match(text.strip())
    if match is None:
        raise CandidateError(f"candidate {text!r}: write NAME=http://HOST:PORT[@/path/to/weights]")
    path = Path(match["path"]) if match["path"] else None
    return Candidate(match["name"], match["url"].rstrip("/"), path)


@dataclass(frozen=True)
class ServedBase:
    candidate: Candidate
    model: str  # the base model's name on that server
    weights: Path


class BaseSelector:
    def __init__(
        self,
        job: TrainingJob,
        store: TrainerStore,
        regrounder: Regrounder,
        fractions: Sequence[float] = FRACTIONS,
    ) -> None:
        self.job = job
        self.store = store
        self.regrounder = regrounder
        self.fractions = tuple(fractions)

    async def run(
        self, alias: str, candidates: Sequence[Candidate], target: float
    ) -> dict[str, Any]:
        if len({candidate.name for candidate in candidates}) < len(candidates):
            raise CandidateError("each candidate needs its own NAME")
        served = [await check_candidate(candidate) for candidate in candidates]
        train_set, validation, holdout = await self._data(alias)
        results = []
        with Progress(f"bases {alias}", len(served) * (1 + len(self.fractions))) as progress:
            for base in served:
                results.append(
                    await self._curve(alias, base, train_set, validation, holdout, progress)
                )
        report = {
            "alias": alias, "target": target, "computed_at": utcnow().isoformat(),
            "holdout": len(holdout), "training_examples": len(train_set),
            "candidates": results, "winner": _winner(results, target),
        }  # fmt: skip
        report["path"] = str(self._write(alias, report))
        return report

    async def _data(self, alias: str) -> tuple[list[Example], list[Example], list[Example]]:
        """The alias's curated split, as a training run would see it (read only)."""
        curated, _ = await self.job.curate(alias)
        holdout = [await self.regrounder.as_served(alias, example) for example in curated.holdout]
        if not holdout:
            raise CandidateError(f"alias {alias} has no holdout yet: approve more examples")
        return curated.train, curated.validation, holdout

    async def _curve(
        self,
        alias: str,
        base: ServedBase,
        train_set: list[Example],
        validation: list[Example],
        holdout: list[Example],
        progress: Progress,
    ) -> dict[str, Any]:
        evaluator = self.job.evaluator(base.candidate.url)
        points = []
        try:
            alone = await evaluator.score_holdout(base.model, holdout)
            points.append({"examples": 0, "fraction": 0.0, "accuracy": alone.accuracy})
            progress(f"{base.candidate.name}: base alone {alone.accuracy:.3f}")
            for fraction in self.fractions:
                subset = train_set[: max(1, math.ceil(fraction * len(train_set)))]
                accuracy = await self._train_and_score(
                    alias, base, evaluator, subset, validation, holdout, fraction
                )
                points.append({"examples": len(subset), "fraction": fraction, "accuracy": accuracy})
                progress(f"{base.candidate.name}: {len(subset)} examples {accuracy:.3f}")
        finally:
            await evaluator.close()
        return {"name": base.candidate.name, "url": base.candidate.url, "model": base.model,
                "weights": str(base.weights), "points": points}  # fmt: skip

    async def _train_and_score(
        self,
        alias: str,
        base: ServedBase,
        evaluator: Evaluator,
        subset: list[Example],
        validation: list[Example],
        holdout: list[Example],
        fraction: float,
    ) -> float:
        config = self.job.config
        label = f"{base.candidate.name}-{round(fraction * 100)}"
        work_dir = config.data_dir / "training" / "bases" / alias / label
        shutil.rmtree(work_dir, ignore_errors=True)  # a fresh run: weights differ per base
        # Trained as a run would train it: with this base's own rehearsal answers.
        mixed = subset + await self.job.rehearsal(
            alias, work_dir, len(subset), evaluator, base.model
        )
        # Its server renders with the base's own template (or ours, for the prepared model).
        template = served_chat_template(base.weights, None)
        settings = replace(config.train, chat_template=str(template or ""))
        result = await anyio.to_thread.run_sync(
            lambda: train(
                mixed, validation, base.weights, work_dir, settings, None, f"bases-{label}"
            )
        )
        served_as = f"bases-{alias}-{label}"
        try:
            async with evaluator.loaded(served_as, result.adapter_dir.resolve()) as name:
                return (await evaluator.score_holdout(name, holdout)).accuracy
        except TrainerError as exc:
            raise CandidateError(
                f"candidate {base.candidate.name}: its server did not take an adapter trained "
                f"on its weights ({exc}); start it with --enable-lora and a --max-lora-rank of "
                f"at least {config.train.rank}"
            ) from None
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def _write(self, alias: str, report: dict[str, Any]) -> Path:
        directory = self.job.config.data_dir / "reports"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"bases-{alias}-{utcnow():%Y%m%dT%H%M%S}.json"
        path.write_text(json.dumps(report, indent=2))
        return path


async def check_candidate(candidate: Candidate) -> ServedBase:
    """The candidate's base model name and weights, or a CandidateError saying what is wrong."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{candidate.url}/v1/models")
        response.raise_for_status()
        models = response.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise CandidateError(
            f"candidate {candidate.name}: {candidate.url} does not answer as a vLLM server "
            f"({type(exc).__name__}: {exc})"
        ) from None
    bases = [model for model in models if not model.get("parent")]
    if not bases:
        raise CandidateError(f"candidate {candidate.name}: {candidate.url} serves no base model")
    model = bases[0]
    weights = candidate.path or Path(str(model.get("root") or model["id"]))
    try:
        await anyio.to_thread.run_sync(load_tokenizer, weights)
    except Exception as exc:  # any loader error means the same: no adapter can be trained
        raise CandidateError(
            f"candidate {candidate.name}: no tokenizer loads from {weights} ({exc}); an adapter "
            "for this base is trained on its weights here: give them as NAME=URL@PATH"
        ) from None
    return ServedBase(candidate, str(model["id"]), weights)


def _winner(results: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The base that first reaches the target with the fewest examples."""
    reached = []
    for result in results:
        first = next((p for p in result["points"] if p["accuracy"] >= target), None)
        if first is not None:
            final = result["points"][-1]["accuracy"]
            reached.append((first["examples"], -final, result["name"], first))
    if not reached:
        return None
    examples, _, name, point = min(reached)
    return {"name": name, "examples": examples, "accuracy": point["accuracy"]}


def format_table(report: dict[str, Any]) -> str:
    """The curves side by side, one row per training-set size."""
    names = [result["name"] for result in report["candidates"]]
    lines = [f"{'examples':>9}  " + "  ".join(f"{name:>14}" for name in names)]
    for row in range(len(report["candidates"][0]["points"])):
        points = [result["points"][row] for result in report["candidates"]]
        label = "base" if points[0]["examples"] == 0 else f"{points[0]['examples']}"
        lines.append(f"{label:>9}  " + "  ".join(f"{p['accuracy']:>14.3f}" for p in points))
    winner = report["winner"]
    lines.append(
        f"target {report['target']:.2f}: "
        + (
            f"{winner['name']} reaches {winner['accuracy']:.3f} with {winner['examples']} examples"
            if winner
            else "no candidate reaches it"
        )
    )
    return "\n".join(lines)
