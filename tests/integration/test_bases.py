"""Base-model selection on the real stack: the embedded base stands in for two candidates
(two names for the one vLLM server; the code path is the one a GPU fleet takes), each scored
alone and after QLoRA on 50% and 100% of an alias's approved examples, through vLLM.

Bad input: a candidate URL that does not answer, a candidate whose weights have no loadable
tokenizer, a malformed candidate and duplicate names each fail with a message naming the
candidate; nothing is trained then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import approve_examples, free_port

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

FACTS = [
    (f"What is the opening time of Zorblax branch {n}?", f"Branch {n} opens at {n + 6} am.")
    for n in range(1, 13)
]


def _bases(data_dir: Path, model_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LORAGATE_DATA_DIR": str(data_dir),
           "LORAGATE_BASE_MODEL_PATH": str(model_dir), "LORAGATE_BASE_MODEL_NAME": BASE_MODEL,
           "LORAGATE_TRAIN_MAX_STEPS": "2", "LORAGATE_TRAIN_MIN_EXAMPLES": "4",
           "LORAGATE_EVAL_MAX_TOKENS": "16", "LORAGATE_LOG_FORMAT": "text"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "eval", "bases", *args],
        env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip


def test_two_candidates_get_a_sample_efficiency_curve_each(
    embedded_server: EmbeddedServer, prepared_model: Path, tmp_path: Path
) -> None:
    alias = "branches"
    approve_examples(f"sqlite+aiosqlite:///{tmp_path / 'loragate.db'}", alias, FACTS)
    url = embedded_server.engine_url
    # Two fractions, not the default three: each point is a QLoRA run and a scoring, and
    # the second fraction already shows the curve's order.
    result = _bases(tmp_path, prepared_model, alias, "--candidate", f"smol-a={url}",
                    "--candidate", f"smol-b={url}", "--target", "0.5",
                    "--fractions", "0.5,1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "examples" in result.stdout and "smol-a" in result.stdout
    report_path = Path(result.stdout.strip().splitlines()[-1].removeprefix("report: "))
    report = json.loads(report_path.read_text())
    assert report["holdout"] >= 2 and report["training_examples"] >= 4
    for candidate in report["candidates"]:
        assert candidate["model"] == BASE_MODEL
        sizes = [point["examples"] for point in candidate["points"]]
        assert sizes[0] == 0 and sizes == sorted(sizes) and len(sizes) == 3
        assert sizes[-1] == report["training_examples"]
        assert all(0 <= point["accuracy"] <= 1 for point in candidate["points"])
    assert not list((tmp_path / "training").glob("bases/**/adapter_model.safetensors"))


def test_bad_candidates_are_named_and_nothing_is_trained(
    embedded_server: EmbeddedServer, prepared_model: Path, tmp_path: Path
) -> None:
    url = embedded_server.engine_url
    nobody = f"http://127.0.0.1:{free_port()}"
    cases = {
        f"gone={nobody}": "gone: http://127.0.0.1",
        f"blind={url}@{tmp_path / 'no-weights'}": "no tokenizer loads",
        "no-url": "write NAME=http://HOST:PORT",
    }
    for candidate, message in cases.items():
        result = _bases(tmp_path, prepared_model, "support", "--candidate", candidate)
        assert result.returncode != 0, candidate
        assert message in result.stderr, (candidate, result.stderr[-2000:])
    twice = _bases(tmp_path, prepared_model, "support", "--candidate", f"a={url}",
                   "--candidate", f"a={url}")  # fmt: skip
    assert twice.returncode != 0 and "its own NAME" in twice.stderr
    assert not (tmp_path / "training").exists()
