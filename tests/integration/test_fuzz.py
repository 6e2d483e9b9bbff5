"""schemathesis against the gateway's own OpenAPI document, on a live gateway and real vLLM.

Every route is called with generated valid and invalid requests (wrong types, missing
fields, values out of range, odd unicode) by an admin key. It passes when no response is a
5xx and every response matches the document: its status, content type, headers and body.

Bounded in CI: ``LORAGATE_FUZZ_EXAMPLES`` examples per route (15) and a time budget,
``LORAGATE_FUZZ_SECONDS`` (150; about 10 000 requests here). ``make fuzz`` runs it longer.
The failures, with a curl line to reproduce each, are in the test's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import ThreadedGateway, create_keys

pytestmark = pytest.mark.vllm

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])  # fmt: skip


def test_every_route_survives_schemathesis(
    gateway_factory: Callable[..., ThreadedGateway], tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    keys = create_keys(database_url)
    # Short answers keep generated chats quick on a CPU; the limits are the gateway's own.
    gateway = gateway_factory(database_url=database_url, default_max_tokens=8, max_n=2)
    seed_collection(gateway, keys["admin"])
    examples = os.environ.get("LORAGATE_FUZZ_EXAMPLES", "15")
    budget = os.environ.get("LORAGATE_FUZZ_SECONDS", "150")
    command = [
        _schemathesis(), "run", f"{gateway.base_url}/schema/openapi.json",
        "--checks", CHECKS, "--max-examples", examples, "--max-time", budget,
        "--header", f"Authorization: Bearer {keys['admin']}",
        "--seed", os.environ.get("LORAGATE_FUZZ_SEED", "1"),
        "--request-timeout", "60", "--workers", "1", "--no-color",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=int(budget) + 300)
    output = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, output
    assert " passed" in output, output
    assert gateway.get("/healthz").status_code == 200


def seed_collection(gateway: ThreadedGateway, admin_key: str) -> None:
    """A collection to search, so search cases reach FAISS and not only the 404."""
    response = httpx.post(
        f"{gateway.base_url}/v1/collections/docs/documents",
        json={"id": "kettles", "text": "Our kettles boil a litre in two minutes."},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=120,
    )
    assert response.status_code == 201, response.text


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert found, "schemathesis is in the dev extra: make test installs it"
    return found
