"""The evaluation gate: a candidate against the alias's live version (or the base).

Both are asked, through vLLM at temperature 0, the holdout in the forms users meet it in
(``trainer/holdout_forms.py``: as served, reworded, closed book) and the general-ability
probes shipped with the project. The candidate is loaded into vLLM under a temporary name for
the duration.

It passes when its holdout accuracy, pooled over the forms that tell the two apart, beats the
live version's by at least ``margin`` and its probe accuracy is no more than
``probe_tolerance`` below the live version's and the base model's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from adapters.engine import ENGINE_KEEPALIVE_S
from core.probes import Probe, parse_probes
from core.progress import Progress
from core.sections import GatePolicy
from retrieval.grounding import lexical_support, sources_in
from trainer.dataset import Example, with_tool_calls
from trainer.errors import EvaluationError
from trainer.holdout_forms import form_of
from trainer.scoring import Embed, probe_passed, score_answers

log = logging.getLogger("loragate.eval")
# What a pooled connection that the server closed while it sat idle raises when reused.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def shipped_probes() -> list[Probe]:
    text = resources.files("trainer").joinpath("probes.jsonl").read_text("utf-8")
    return parse_probes(text, "trainer/probes.jsonl")


def gate_probes(policy: GatePolicy) -> list[Probe]:
    """The operator's probes (``eval_probes_path``, checked when the settings loaded), else
    the shipped ones."""
    if policy.probes_path is None:
        return shipped_probes()
    path = policy.probes_path
    probes = parse_probes(path.read_text(encoding="utf-8"), str(path))
    if len(probes) * policy.probe_tolerance < 1:
        # A 135M model's answers to short prompts flip both ways under any change of weights:
        # with 8 probes and the 0.05 tolerance, one flip (0.125) refused a good candidate.
        log.warning(
            "too few probes for the tolerance: one changed answer refuses any candidate",
            extra={"probes": len(probes), "path": str(path), "tolerance": policy.probe_tolerance},
        )
    return probes


@dataclass
class SetScore:
    model: str
    count: int = 0
    accuracy: float = 0.0
    similarity: float = 0.0
    groundedness: float | None = None
    forms: dict[str, float] = field(default_factory=dict)  # accuracy per holdout form
    items: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("items")
        return data


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]
    holdout_gain: float
    probe_change: float
    forms_left_out: tuple[str, ...] = ()  # holdout forms that could not tell the sides apart

    def report(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "holdout_gain": self.holdout_gain,
            "probe_change": self.probe_change,
            "forms_left_out": list(self.forms_left_out),
        }


@dataclass(frozen=True)
class PooledHoldout:
    """Both sides' holdout accuracy over the items the gain is measured on."""

    candidate: float
    live: float
    forms_left_out: tuple[str, ...] = ()


def pool_holdout(candidate: SetScore, live: SetScore) -> PooledHoldout:
    """Both sides' accuracy pooled over the holdout forms that can tell them apart.

    A form both sides answer all wrong, or all right, says nothing about which is better,
    and pooled in it only shrinks the gain: closed book, a holdout of made-up facts that
    neither side trained on is 0 for both, and its third of the items cut a candidate's
    +0.071 on the other forms to +0.048, under the 0.05 margin (docs/training.md). The
    whole form is left out or kept, so a form where the sides merely tie still counts.
    Scores without items (or not of the same items) pool every form."""
    pooled = PooledHoldout(candidate.accuracy, live.accuracy)
    live_marks = {item["id"]: bool(item["correct"]) for item in live.items}
    if not candidate.items or {item["id"] for item in candidate.items} != set(live_marks):
        return pooled
    by_form: dict[str, list[tuple[bool, bool]]] = {}
    for item in candidate.items:
        pair = (bool(item["correct"]), live_marks[item["id"]])
        by_form.setdefault(item["form"], []).append(pair)
    silent = tuple(form for form, pairs in by_form.items() if len(set(chain(*pairs))) == 1)
    kept = [pair for form, pairs in by_form.items() if form not in silent for pair in pairs]
    if not silent:
        return pooled
    if not kept:  # the same answers throughout: no gain
        return PooledHoldout(candidate.accuracy, live.accuracy, silent)
    return PooledHoldout(
        round(sum(mark for mark, _ in kept) / len(kept), 4),
        round(sum(mark for _, mark in kept) / len(kept), 4),
        silent,
    )


def changed(
    candidate: tuple[SetScore, SetScore], live: tuple[SetScore, SetScore]
) -> dict[str, list[dict[str, Any]]]:
    """The holdout items and the probes (``changed_items``) of a scored pair of sides."""
    return {
        "holdout": changed_items(candidate[0], live[0]),
        "probes": changed_items(candidate[1], live[1]),
    }


def changed_items(candidate: SetScore, live: SetScore) -> list[dict[str, Any]]:
    """The items the two sides are marked differently on, with both answers: what a verdict
    turned on. A handful where the items are hundreds, so a report keeps them for both the
    holdout and the probes; without them a refusal names a score, not a question."""
    live_items = {_item_key(item): item for item in live.items}
    changed = []
    for item in candidate.items:
        other = live_items.get(_item_key(item))
        if other is None or bool(other["correct"]) == bool(item["correct"]):
            continue
        changed.append({
            "asked": item.get("question", item.get("prompt")),
            **({"form": item["form"]} if "form" in item else {}),
            "expected": item.get("reference", item.get("expect")),
            "candidate": item["answer"],
            "live": other["answer"],
            "candidate_correct": bool(item["correct"]),
        })  # fmt: skip
    return changed


def _item_key(item: dict[str, Any]) -> str:
    return str(item.get("id", item.get("prompt")))


def decide(
    candidate: tuple[SetScore, SetScore],
    live: tuple[SetScore, SetScore],
    policy: GatePolicy,
    base_probes: SetScore | None = None,
) -> Verdict:
    """``base_probes``: the base model's, when the live model is an adapter. Each version may
    lose up to the tolerance against the one before it; measured against the base as well,
    small losses cannot add up over versions."""
    (holdout_c, probes_c), (holdout_l, probes_l) = candidate, live
    pooled = pool_holdout(holdout_c, holdout_l)
    gain = pooled.candidate - pooled.live
    change = probes_c.accuracy - probes_l.accuracy
    reasons = []
    if holdout_c.count == 0:
        reasons.append("the holdout is empty: nothing to measure a gain on")
    elif gain < policy.margin:
        left_out = pooled.forms_left_out
        reasons.append(
            f"holdout accuracy {pooled.candidate:.3f} vs live {pooled.live:.3f}"
            + (f" (without {', '.join(left_out)}: the same on both sides)" if left_out else "")
            + f": gain {gain:+.3f} is below the margin {policy.margin:.3f}"
        )
    if change < -policy.probe_tolerance:
        reasons.append(
            f"probe accuracy fell {-change:.3f} (from {probes_l.accuracy:.3f} to "
            f"{probes_c.accuracy:.3f}), more than the tolerance {policy.probe_tolerance:.3f}"
        )
    floor = None if base_probes is None else base_probes.accuracy - policy.probe_tolerance
    if base_probes is not None and floor is not None and probes_c.accuracy < floor:
        reasons.append(
            f"probe accuracy {probes_c.accuracy:.3f} is more than the tolerance "
            f"{policy.probe_tolerance:.3f} below the base model's {base_probes.accuracy:.3f}"
        )
    return Verdict(not reasons, reasons, round(gain, 4), round(change, 4), pooled.forms_left_out)


# The settings' defaults (``eval_*``), for an Evaluator made outside a training run.
_DEFAULT_POLICY = GatePolicy()


class Evaluator:
    """Scores models served by one vLLM server; ``embed`` gives unit-norm sentence vectors."""

    def __init__(
        self,
        engine_url: str,
        embed: Embed,
        *,
        api_key: str = "",
        max_tokens: int = _DEFAULT_POLICY.max_tokens,
        concurrency: int = _DEFAULT_POLICY.concurrency,
        timeout_s: float = _DEFAULT_POLICY.timeout_s,
    ) -> None:
        self.engine_url = engine_url.rstrip("/")
        self.embed = embed
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.engine_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            # httpx's default (5 s) is vLLM's own: a connection reused as the server dropped
            # it failed a benchmark's training run at its gate ("ReadError").
            limits=httpx.Limits(keepalive_expiry=ENGINE_KEEPALIVE_S),
        )

    async def close(self) -> None:
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def loaded(self, name: str, adapter_dir: Path) -> AsyncIterator[str]:
        """Serve ``adapter_dir`` (absolute: vLLM has its own cwd) as ``name``, then unload."""
        await self._post(
            "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(adapter_dir)}
        )
        try:
            yield name
        finally:
            with contextlib.suppress(EvaluationError):
                await self._post("/v1/unload_lora_adapter", {"lora_name": name})

    async def _send(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST, and once more when the pooled connection it went on turns out closed (an
        event loop busy for a second can still outlive the keep-alive); the failed
        connection is discarded. Every request here is safe to repeat: loading an adapter
        twice is tolerated, answers are greedy."""
        try:
            try:
                return await self._client.post(path, json=body)
            except _STALE_CONNECTION as exc:
                log.warning("engine connection dropped; retrying", extra={"error": repr(exc)})
                return await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise EvaluationError(
                f"vLLM at {self.engine_url} is unreachable: {type(exc).__name__} {exc}"
            ) from None

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        response = await self._send(path, body)
        if response.status_code >= 400 and "already been loaded" not in response.text:
            raise EvaluationError(
                f"vLLM refused {path} ({response.status_code}): {response.text[:300]}"
            )

    async def answer(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The greedy reply as text, with any tool calls it made as ``name(arguments)`` lines."""
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        if tools:
            body["tools"] = tools
        response = await self._send("/v1/chat/completions", body)
        if response.status_code != 200:
            raise EvaluationError(
                f"vLLM answered {response.status_code} for {model}: {response.text[:300]}"
            )
        message = response.json()["choices"][0]["message"]
        return with_tool_calls(str(message.get("content") or ""), message.get("tool_calls"))

    async def answers(
        self,
        model: str,
        prompts: Sequence[list[dict[str, Any]]],
        tools: Sequence[list[dict[str, Any]] | None] | None = None,
    ) -> list[str]:
        """``model``'s reply to each prompt (with its tools, if any), a few at a time. Each
        answer is a progress step: on vLLM's CPU build one set takes minutes with an adapter."""
        limit = asyncio.Semaphore(self.concurrency)
        offered = tools if tools is not None else [None] * len(prompts)
        with Progress(f"answers {model}", len(prompts)) as progress:

            async def one(
                messages: list[dict[str, Any]], offered: list[dict[str, Any]] | None
            ) -> str:
                async with limit:
                    answer = await self.answer(model, messages, offered)
                progress("answered")
                return answer

            return list(await asyncio.gather(*map(one, prompts, offered)))

    async def score_holdout(self, model: str, examples: Sequence[Example]) -> SetScore:
        if not examples:
            return SetScore(model)
        answers = await self.answers(
            model, [example.messages for example in examples], [ex.tools for ex in examples]
        )
        scores = score_answers(
            answers,
            [example.reply_text for example in examples],
            self.embed,
            [example.question for example in examples],
        )
        items, grounded = [], []
        for example, answer, score in zip(examples, answers, scores, strict=True):
            sources = _sources(example)
            if sources:
                grounded.append(lexical_support(answer, sources))
            items.append(
                {
                    "id": example.id,
                    "form": form_of(example.id),
                    "question": example.question,
                    "answer": answer,
                    "reference": example.reply_text,
                    **asdict(score),
                }
            )
        return SetScore(
            model,
            len(items),
            accuracy=round(sum(item["correct"] for item in items) / len(items), 4),
            similarity=round(float(np.mean([score.similarity for score in scores])), 4),
            groundedness=round(float(np.mean(grounded)), 4) if grounded else None,
            forms=_accuracy_by_form(items),
            items=items,
        )

    async def score_probes(self, model: str, probes: Sequence[Probe]) -> SetScore:
        prompts = [[{"role": "user", "content": probe.prompt}] for probe in probes]
        answers = await self.answers(model, prompts)
        passed = [
            probe_passed(answer, probe.accepted)
            for probe, answer in zip(probes, answers, strict=True)
        ]
        items: list[dict[str, Any]] = [
            {"prompt": probe.prompt, "answer": answer, "expect": probe.accepted, "correct": ok}
            for probe, answer, ok in zip(probes, answers, passed, strict=True)
        ]
        accuracy = sum(passed) / len(passed) if passed else 0.0
        return SetScore(model, len(items), accuracy=round(accuracy, 4), items=items)

    async def score(
        self, model: str, holdout: Sequence[Example], probes: Sequence[Probe]
    ) -> tuple[SetScore, SetScore]:
        log.info(
            "evaluating", extra={"model": model, "holdout": len(holdout), "probes": len(probes)}
        )
        return await self.score_holdout(model, holdout), await self.score_probes(model, probes)


def _accuracy_by_form(items: Sequence[dict[str, Any]]) -> dict[str, float]:
    by_form: dict[str, list[bool]] = {}
    for item in items:
        by_form.setdefault(item["form"], []).append(bool(item["correct"]))
    return {form: round(sum(marks) / len(marks), 4) for form, marks in by_form.items()}


def _sources(example: Example) -> list[str]:
    for message in example.messages:
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            found = sources_in(message["content"])
            if found:
                return found
    return []
