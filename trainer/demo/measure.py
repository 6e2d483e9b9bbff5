"""How well a model answers a generated domain's held-out paraphrases, closed book and grounded.

The prompts are built exactly as the gateway builds them (retrieval/grounding.py) from the
sources the gateway's own search returns, and sent to vLLM at temperature 0; so a rejected
candidate, which the gateway does not serve, is measured the same way as the base. Two
scores side by side: the project's scorer (trainer/scoring.py) and a plain check that the
answer contains the fact's key string.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from retrieval.grounding import ground_messages
from trainer.demo import Embed, Question
from trainer.demo.domain import Domain
from trainer.evaluate import Evaluator, shipped_probes
from trainer.scoring import normalize, score_answer

Search = Callable[[str], Awaitable[list[str]]]  # a question → the texts of its top sources


@dataclass(frozen=True)
class Accuracy:
    scorer: float  # share correct by the project's scorer
    contains: float  # share containing the fact's key
    answers: tuple[str, ...]


async def paraphrase_accuracy(
    evaluator: Evaluator,
    model: str,
    domain: Domain,
    embed: Embed,
    search: Search | None,
) -> Accuracy:
    """``model`` on every held-out paraphrase; grounded when ``search`` is given."""
    asked = domain.paraphrases()
    chats = []
    for question in asked:
        turn = [{"role": "user", "content": question.question}]
        chats.append(ground_messages(turn, await search(question.question)) if search else turn)
    answers = await evaluator.answers(model, chats)
    return _accuracy(answers, asked, domain, embed)


async def probe_accuracy(evaluator: Evaluator, model: str) -> float:
    return (await evaluator.score_probes(model, shipped_probes())).accuracy


def _accuracy(
    answers: Sequence[str], asked: Sequence[Question], domain: Domain, embed: Embed
) -> Accuracy:
    vectors = embed([text for answer, q in zip(answers, asked, strict=True)
                     for text in (answer, q.answer)])  # fmt: skip
    scored = [
        score_answer(answer, q.answer, float(vectors[2 * i] @ vectors[2 * i + 1])).correct
        for i, (answer, q) in enumerate(zip(answers, asked, strict=True))
    ]
    contains = [
        normalize(domain.key(q.fact)) in normalize(answer)
        for answer, q in zip(answers, asked, strict=True)
    ]
    count = len(asked) or 1
    return Accuracy(sum(scored) / count, sum(contains) / count, tuple(answers))
