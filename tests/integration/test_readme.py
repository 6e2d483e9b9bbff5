"""The README, run as written (issue 22): every shell and Python block, top to bottom, against
a real gateway on the session's vLLM, in a folder laid out as a fresh clone after
``make run`` (``data/dev-admin.key``, ``examples/``, ``.venv/bin/loragate``).

Only the host and port are changed (the test's gateway for ``localhost:8000``) and the alias
``support`` is renamed so that its versions cannot meet another test's in the shared vLLM.
A block the test cannot run says why in a ``<!-- readme-test: skip (reason) -->`` line above
it: installing and starting the server (the test's stands in), long training runs (played
by test_trainer_loop), GPU hosts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import BASE_MODEL
from tests.support import ThreadedGateway, create_keys

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"^<!-- readme-test: skip \((.+)\) -->$")
SKIP_REASONS = ("installs and starts the server", "long", "GPU")


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    text: str
    skip: str | None


def readme_blocks(text: str) -> list[Block]:
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(at for at in range(index + 1, len(lines)) if lines[at].startswith("```"))
        marker = _SKIP.match(lines[index - 1]) if index else None
        blocks.append(
            Block(
                index + 1,
                fence.group(1),
                "\n".join(lines[index + 1 : end]),
                marker and marker.group(1),
            )
        )
        index = end + 1
    return blocks


def test_every_readme_block_runs_or_says_why_not() -> None:
    blocks = readme_blocks((REPO / "README.md").read_text())
    assert {block.language for block in blocks} <= {"sh", "python"}, "untagged or other blocks"
    skipped = [block for block in blocks if block.skip]
    assert all(block.skip.startswith(SKIP_REASONS) for block in skipped if block.skip), skipped
    # The README's point is that it can be followed: most of it must run.
    assert len(skipped) <= 5 and len(blocks) - len(skipped) >= 7, [b.line for b in skipped]


def test_the_readme_runs_as_written(
    gateway_factory: Callable[..., ThreadedGateway],
    prepared_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = gateway_factory(data_dir=tmp_path / "data", base_model_path=prepared_model)
    clone = _fresh_clone(tmp_path, gateway, prepared_model)
    alias = f"support{uuid.uuid4().hex[:6]}"
    address = gateway.base_url.removeprefix("http://")
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    monkeypatch.chdir(clone)
    for block in readme_blocks((REPO / "README.md").read_text()):
        if block.skip:
            continue
        text = re.sub(r"(localhost|127\.0\.0\.1):8000", address, block.text)
        text = re.sub(r"\bsupport\b", alias, text)
        if block.language == "python":
            exec(compile(text, f"README.md:{block.line}", "exec"), namespace)
        else:
            _run_shell(text, clone, block.line)
    # What the README says the grounded answer carries: the returns page as its source (the
    # 135M model's wording varies, README.md says so; test_grounded_chat checks the fact).
    citations = namespace["reply"].model_extra["citations"]
    assert citations[0]["document_id"].startswith("returns"), citations


def _fresh_clone(tmp_path: Path, gateway: ThreadedGateway, model: Path) -> Path:
    """What ``make run`` leaves: the admin key, the examples and the CLI in ``.venv``."""
    clone = tmp_path / "clone"
    (clone / "data").mkdir(parents=True)
    keys = create_keys(gateway.settings.resolved_database_url)
    key_file = clone / "data" / "dev-admin.key"
    key_file.write_text(keys["admin"] + "\n")
    key_file.chmod(0o600)
    shutil.copytree(REPO / "examples", clone / "examples")
    cli = clone / ".venv" / "bin" / "loragate"
    cli.parent.mkdir(parents=True)
    settings = gateway.settings
    environment = {
        "LORAGATE_DATA_DIR": str(settings.data_dir),
        "LORAGATE_ENGINE_MODE": "external",
        "LORAGATE_ENGINE_URLS": ",".join(settings.engine.urls),
        "LORAGATE_BASE_MODEL_NAME": BASE_MODEL,
        "LORAGATE_BASE_MODEL_PATH": str(model),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    exports = "".join(f"export {name}='{value}'\n" for name, value in environment.items())
    cli.write_text(f'#!/bin/sh\n{exports}exec "{sys.executable}" -m gateway.cli "$@"\n')
    cli.chmod(0o755)
    return clone


def _run_shell(text: str, clone: Path, line: int) -> None:
    """One block in bash, strict; the variables it sets (``KEY=...``) carry to the next."""
    state = clone / ".readme-state.sh"
    state.touch()
    assigned = sorted(set(re.findall(r"^\s*([A-Z_][A-Z0-9_]*)=", text, re.MULTILINE)))
    keep = "".join(f"declare -p {name} >> {state}\n" for name in assigned)
    # curl -s exits 0 on an HTTP error: here every request must succeed.
    strict_curl = 'curl() { command curl --fail-with-body "$@"; }\n'
    script = f"set -euo pipefail\n{strict_curl}source {state}\n{text}\n{keep}"
    result = subprocess.run(
        ["bash", "-c", script], cwd=clone, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README.md:{line}\n{result.stdout}\n{result.stderr}"
