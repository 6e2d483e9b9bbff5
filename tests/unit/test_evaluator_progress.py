"""The evaluator's answers are progress steps (trainer/evaluate.py): on vLLM's CPU build a
scoring set with an adapter takes minutes, and `loragate train` or `eval compare` must show
it moving. The real path (vLLM scoring a candidate) runs in
tests/integration/test_trainer_loop.py."""

from __future__ import annotations

import json
import logging

import httpx
import numpy as np
import pytest

from trainer.evaluate import Evaluator


def _engine(request: httpx.Request) -> httpx.Response:
    prompt = json.loads(request.content)["messages"][-1]["content"]
    return httpx.Response(200, json={"choices": [{"message": {"content": prompt.upper()}}]})


async def test_each_answer_is_a_progress_step(caplog: pytest.LogCaptureFixture) -> None:
    evaluator = Evaluator(
        "http://engine", embed=lambda texts: np.zeros((len(texts), 4)), concurrency=2
    )
    evaluator._client = httpx.AsyncClient(
        base_url="http://engine", transport=httpx.MockTransport(_engine)
    )
    prompts = [[{"role": "user", "content": f"question {n}"}] for n in range(5)]
    with caplog.at_level(logging.INFO, logger="loragate.progress"):
        answers = await evaluator.answers("candidate", prompts)
    await evaluator.close()

    assert answers == [f"QUESTION {n}" for n in range(5)]  # in the prompts' order
    steps = [r for r in caplog.records if r.getMessage() == "progress"]
    assert [(r.task, r.done, r.total) for r in steps] == [  # type: ignore[attr-defined]
        ("answers candidate", done, 5) for done in range(1, 6)
    ]
    assert [r.getMessage() for r in caplog.records][-1] == "finished"
