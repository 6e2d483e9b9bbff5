"""A small fictional domain the base model cannot know: Quillfeather Cycles.

Five policy and product documents, and 72 questions (24 facts, three phrasings each) with
the answer a support agent should give. ``make demo`` and the trainer's tests use them to play
the loop: ingest, chat, feedback with corrections, review, train, evaluate, canary, promote.

The simulated users here talk to a running gateway over HTTP, like real ones.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx
import numpy as np

from trainer.scoring import score_answers

ALIAS = "cycles"
COLLECTION = "quillfeather"
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Question:
    fact: str
    question: str
    answer: str


@dataclass
class DemoAnswer:
    question: Question
    completion_id: str
    answer: str
    model: str  # the version that answered
    correct: bool = False


def documents() -> list[dict[str, str]]:
    folder = resources.files("trainer.demo").joinpath("documents")
    return [
        {
            "id": entry.name.removesuffix(".md"),
            "source": entry.name,
            "markdown": entry.read_text(encoding="utf-8"),
        }
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if entry.name.endswith(".md")
    ]


def questions() -> list[Question]:
    text = resources.files("trainer.demo").joinpath("questions.jsonl").read_text("utf-8")
    return [Question(**json.loads(line)) for line in text.splitlines() if line.strip()]


def retrieval_config() -> dict[str, Any]:
    """The alias's retrieval, as the gateway's ``retrieval_models`` setting takes it."""
    return {ALIAS: {"collection": COLLECTION, "top_k": 2}}


class DemoUsers:
    """Simulated users and operator of one gateway."""

    def __init__(self, base_url: str, chat_key: str, admin_key: str, embed: Embed) -> None:
        self.base_url = base_url.rstrip("/")
        self.embed = embed
        self._chat = {"Authorization": f"Bearer {chat_key}"}
        self._admin = {"Authorization": f"Bearer {admin_key}"}
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=300)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, admin: bool = False, **kwargs: Any) -> Any:
        headers = self._admin if admin else self._chat
        response = await self._client.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    async def setup(
        self,
        alias: str = ALIAS,
        collection: str = COLLECTION,
        docs: Sequence[dict[str, str]] | None = None,
    ) -> None:
        """Declare the alias and ingest the documents (the demo's by default) into its
        collection."""
        await self._call("POST", "/v1/admin/aliases", admin=True, json={"alias": alias})
        for document in documents() if docs is None else docs:
            await self._call(
                "POST", f"/v1/collections/{collection}/documents", admin=True, json=document
            )

    async def ask(
        self,
        asked: Sequence[Question],
        model: str = ALIAS,
        concurrency: int = 6,
        max_tokens: int = 48,
    ) -> list[DemoAnswer]:
        """Each question in its own conversation; answers are scored against the reference."""
        limit = asyncio.Semaphore(concurrency)

        async def one(question: Question) -> DemoAnswer:
            async with limit:
                body = await self._call(
                    "POST",
                    "/v1/chat/completions",
                    json={
                        "model": model,
                        "temperature": 0,
                        "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": question.question}],
                        "conversation_id": f"demo-{uuid.uuid4().hex[:12]}",
                    },
                )
            answer = body["choices"][0]["message"]["content"] or ""
            return DemoAnswer(question, body["id"], answer, body["model"])

        served = list(await asyncio.gather(*(one(question) for question in asked)))
        scores = score_answers(
            [item.answer for item in served],
            [item.question.answer for item in served],
            self.embed,
            [item.question.question for item in served],
        )
        for item, score in zip(served, scores, strict=True):
            item.correct = score.correct
        return served

    async def give_feedback(self, served: Sequence[DemoAnswer]) -> None:
        """Wrong answers get a thumbs-down and the right answer as a correction. Right ones
        get a thumbs-up, and the operator keeps them as examples, rewritten in the house
        style (the reference answer): a 135M model's right answers are often right by luck,
        wrapped in a sentence that is not, and it learns from whatever it is shown."""
        for item in served:
            completion = {"completion_id": item.completion_id}
            if item.correct:
                await self._call("POST", "/v1/feedback", json={**completion, "score": 1})
                await self._call("POST", "/v1/admin/review", admin=True, json={
                    **completion, "note": "good answer, house style",
                    "correction": item.question.answer,
                })  # fmt: skip
            else:
                await self._call("POST", "/v1/feedback", json={
                    **completion, "score": -1, "correction": item.question.answer,
                })  # fmt: skip

    async def rate(self, served: Sequence[DemoAnswer]) -> None:
        """Thumbs up for right answers, down for wrong ones (what the canary gates read)."""
        for item in served:
            await self._call(
                "POST",
                "/v1/feedback",
                json={
                    "completion_id": item.completion_id,
                    "score": 1 if item.correct else -1,
                },
            )

    async def rollout(self, alias: str = ALIAS) -> dict[str, Any]:
        status: dict[str, Any] = await self._call("GET", f"/v1/admin/rollouts/{alias}", admin=True)
        return status

    async def versions(self, alias: str = ALIAS) -> list[dict[str, Any]]:
        listing = await self._call("GET", "/v1/admin/adapters", admin=True,
                                   params={"alias": alias})  # fmt: skip
        versions: list[dict[str, Any]] = listing["data"]
        return versions

    async def wait_flagged(self, count: int, alias: str = ALIAS, timeout_s: float = 60) -> None:
        """Wait until ``count`` items of the alias are pending review (automatic flags are
        written after the answers went out)."""
        params = {"alias": alias, "state": "pending", "limit": 1000}
        for _ in range(int(timeout_s * 2)):
            listing = await self._call("GET", "/v1/admin/review", admin=True, params=params)
            if len(listing["data"]) >= count:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"fewer than {count} review items of {alias} after {timeout_s} s")

    async def approve_all(self, alias: str = ALIAS) -> int:
        """The operator approves every pending item of the alias (corrections as listed: a
        correction posted after the listing is refused, not approved)."""
        listing = await self._call(
            "GET", "/v1/admin/review", admin=True, params={"alias": alias, "limit": 1000}
        )
        for item in listing["data"]:
            await self._call(
                "POST",
                f"/v1/admin/review/{item['id']}/decision",
                admin=True,
                json={"decision": "approve", "revision": item["revision"]},
            )
        return len(listing["data"])


def accuracy(served: Sequence[DemoAnswer]) -> float:
    return sum(item.correct for item in served) / len(served) if served else 0.0
