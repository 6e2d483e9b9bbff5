"""How well a model answers a generated domain's held-out paraphrases, closed book and grounded.

The prompts are built exactly as the gateway builds them (retrieval/grounding.py) from the
sources the gateway's own search returns, and sent to vLLM at temperature 0; so a rejected
candidate, which the gateway does not serve, is measured the same way as the base. Two
scores side by side: the project's scorer (trainer/scoring.py) and a plain check that the
answer contains the fact's key string.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapters.validation import WEIGHTS_FILE, safetensors_header
from retrieval.grounding import ground_messages
from trainer.demo import Embed, Question
from trainer.demo.domain import Domain
from trainer.evaluate import Evaluator, shipped_probes
from trainer.scoring import normalize, score_answers

Search = Callable[[str], Awaitable[list[str]]]  # a question → the texts of its top sources


@dataclass(frozen=True)
class Accuracy:
    scorer: float  # share correct by the project's scorer
    contains: float  # share containing the fact's key
    answers: tuple[str, ...]
    correct: tuple[bool, ...] = ()  # by the scorer, one per paraphrase

    def on(self, indexes: Sequence[int]) -> float | None:
        """The scorer's accuracy on some of the paraphrases; None for none."""
        return sum(self.correct[i] for i in indexes) / len(indexes) if indexes else None


async def paraphrase_accuracy(
    evaluator: Evaluator,
    model: str,
    domain: Domain,
    embed: Embed,
    sources: Sequence[list[str]] | None,
) -> Accuracy:
    """``model`` on every held-out paraphrase; grounded in ``sources`` (one list per
    paraphrase) when given."""
    asked = domain.paraphrases()
    chats = [[{"role": "user", "content": question.question}] for question in asked]
    if sources is not None:
        chats = [ground_messages(chat, found) for chat, found in zip(chats, sources, strict=True)]
    answers = await evaluator.answers(model, chats)
    return _accuracy(answers, asked, domain, embed)


def held_out_facts(domain: Domain, report: dict[str, Any]) -> set[str]:
    """The facts whose users' questions the gate held out (never trained on): those asked
    in its items as served, from a version's eval report."""
    served = {item["question"] for item in report["holdout_items"] if item["form"] == "served"}
    return {question.fact for question in domain.questions() if question.question in served}


def retrieval_hits(domain: Domain, sources: Sequence[list[str]]) -> list[bool]:
    """Whether each paraphrase's sources hold its fact's key: the ceiling of grounding."""
    return [
        any(normalize(domain.key(question.fact)) in normalize(text) for text in found)
        for question, found in zip(domain.paraphrases(), sources, strict=True)
    ]


async def probe_accuracy(evaluator: Evaluator, model: str) -> float:
    return (await evaluator.score_probes(model, shipped_probes())).accuracy


def _accuracy(
    answers: Sequence[str], asked: Sequence[Question], domain: Domain, embed: Embed
) -> Accuracy:
    references, questions = [q.answer for q in asked], [q.question for q in asked]
    scored = [score.correct for score in score_answers(answers, references, embed, questions)]
    contains = [
        normalize(domain.key(q.fact)) in normalize(answer)
        for answer, q in zip(answers, asked, strict=True)
    ]
    count = len(asked) or 1
    return Accuracy(sum(scored) / count, sum(contains) / count, tuple(answers), tuple(scored))


@dataclass
class Comparison:
    """The base and adapters on a domain's held-out paraphrases, and on the probes."""

    paraphrases: dict[tuple[str, str], Accuracy]  # (base | an adapter's label, closed | grounded)
    probes: dict[str, float]  # base | an adapter's label; empty when not asked for
    retrieval_hits: list[bool] = field(default_factory=list)  # per paraphrase


async def compare(
    engine_url: str,
    gateway_url: str,
    chat_key: str,
    domain: Domain,
    adapters: Mapping[str, Path],
    base_model: str,
    embed: Embed,
    top_k: int,
    modes: Sequence[str] = ("closed", "grounded"),
    probes: bool = True,
) -> Comparison:
    """Measure the base and each of ``adapters`` (label → directory), every adapter loaded
    into vLLM under a temporary name while it answers; the sources come from the gateway's
    own search of the domain's collection."""
    sources = await paraphrase_sources(gateway_url, chat_key, domain, top_k)
    result = Comparison({}, {}, retrieval_hits(domain, sources))
    # One paraphrase at a time: vLLM's CPU kernels round differently by batch size, and
    # batched, the same base and candidate scored 0.60 and 0.50 on a domain's 20
    # paraphrases that they answered 0.50 and 0.60 one by one. Sequential answers repeat
    # exactly, so a no-op adapter scores exactly the base. The 99 probes stay batched.
    evaluator = Evaluator(engine_url, embed, max_tokens=48, concurrency=1)
    batched = Evaluator(engine_url, embed, max_tokens=48)

    async def measure(label: str, model: str) -> None:
        for mode in modes:
            grounded = sources if mode == "grounded" else None
            result.paraphrases[(label, mode)] = await paraphrase_accuracy(
                evaluator, model, domain, embed, grounded
            )
        if probes:
            result.probes[label] = await probe_accuracy(batched, model)

    try:
        await measure("base", base_model)
        for label, adapter_dir in adapters.items():
            async with evaluator.loaded(f"{label}-{domain.seed}", adapter_dir) as name:
                await measure(label, name)
    finally:
        await evaluator.close()
        await batched.close()
    return result


async def paraphrase_sources(
    gateway_url: str, chat_key: str, domain: Domain, top_k: int
) -> list[list[str]]:
    """The texts of each held-out paraphrase's top sources, from the gateway's own search of
    the domain's collection."""
    headers = {"Authorization": f"Bearer {chat_key}"}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=60) as http:

        async def search(question: str) -> list[str]:
            params: dict[str, str | int] = {"q": question, "k": top_k}
            found = await http.get(f"/v1/collections/{domain.collection}/search", params=params)
            found.raise_for_status()
            return [hit["text"] for hit in found.json()["data"]]

        return [await search(question.question) for question in domain.paraphrases()]


def noop_twin(adapter_dir: Path, twin_dir: Path) -> Path:
    """A copy of the adapter whose ``lora_B`` matrices are zero: the same shapes through
    vLLM's LoRA path, adding exactly nothing to the base. What an adapter that learnt
    nothing scores, which a real gain must exceed."""
    shutil.copytree(adapter_dir, twin_dir)
    weights = twin_dir / WEIGHTS_FILE
    with weights.open("r+b") as handle:
        data_start = 8 + struct.unpack("<Q", handle.read(8))[0]
        for name, info in safetensors_header(weights).items():
            if "lora_B" in name:
                start, end = info["data_offsets"]
                handle.seek(data_start + start)
                handle.write(bytes(end - start))  # zero bits are 0.0 in every float dtype
    return twin_dir
