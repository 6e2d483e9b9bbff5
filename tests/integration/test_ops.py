"""Health, readiness, OpenAPI, metrics and the key commands, on the real stack."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import BASE_MODEL, EmbeddedServer, sdk_client
from tests.support import ThreadedGateway, create_keys, free_port


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_health_ready_and_schema(embedded_server: EmbeddedServer) -> None:
    assert httpx.get(f"{embedded_server.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{embedded_server.base_url}/readyz").json()
    assert ready["status"] == "ready" and ready["engines"][0]["healthy"]
    assert ready["retrieval"] == "ready"  # the embedder and indexes are loaded
    schema = httpx.get(f"{embedded_server.base_url}/schema/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]
    assert "/v1/models" in schema["paths"]


def test_metrics_count_requests_tokens_and_ttft(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    client.chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    list(
        client.chat.completions.create(
            model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
            stream=True,
        )
    )  # fmt: skip
    samples = _samples(httpx.get(f"{embedded_server.base_url}/metrics").text)

    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    # A request for the base model is its own alias; the version is the model that answered.
    served = {"alias": BASE_MODEL, "version": BASE_MODEL}
    assert sample("loragate_requests_total", **served, status="2xx") >= 2
    assert sample("loragate_request_duration_seconds_count", **served) >= 2
    assert sample("loragate_time_to_first_token_seconds_count", **served) >= 1
    assert sample("loragate_inter_token_latency_seconds_count", **served) >= 1
    assert sample("loragate_tokens_total", **served, kind="completion") >= 2
    for stream in ("true", "false"):
        assert sample("loragate_gateway_overhead_seconds_count", alias=BASE_MODEL, stream=stream)
    assert sample("loragate_requests_in_flight", alias=BASE_MODEL) == 0
    assert sample("loragate_store_up") == 1.0


def test_overhead_header_is_below_the_total_latency(embedded_server: EmbeddedServer) -> None:
    raw = embedded_server.client().chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    overhead_ms = float(raw.headers["x-loragate-overhead-ms"])
    assert 0 < overhead_ms < raw.elapsed.total_seconds() * 1000


def test_cli_key_works_and_revoked_key_stops_working(
    gateway_factory: Callable[..., ThreadedGateway], tmp_path: object
) -> None:
    gateway = gateway_factory(key_cache_seconds=0)
    env = {**os.environ, "LORAGATE_DATA_DIR": str(gateway.settings.data_dir)}
    created = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "create", "--scope", "chat", "--name", "cli"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = created.stdout.strip()
    assert key.startswith("lg-")
    assert sdk_client(gateway.base_url, key).models.list().data

    admin = create_keys(gateway.settings.resolved_database_url)["admin"]
    listing = gateway.get("/v1/admin/keys", headers={"Authorization": f"Bearer {admin}"}).json()
    key_id = next(row["id"] for row in listing["data"] if row["name"] == "cli")
    assert all(key not in str(row) for row in listing["data"])  # only hashes are stored

    revoked = httpx.delete(
        f"{gateway.base_url}/v1/admin/keys/{key_id}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert revoked.status_code == 200
    assert gateway.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_requests_avoid_a_dead_replica(
    gateway_factory: Callable[..., ThreadedGateway], embedded_server: EmbeddedServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = gateway_factory(
        engine_urls=f"{dead},{embedded_server.engine_url}", auth_enabled=False
    )
    ready = gateway.get("/readyz").json()
    assert {engine["url"]: engine["healthy"] for engine in ready["engines"]} == {
        dead: False,
        embedded_server.engine_url: True,
    }
    for _ in range(4):
        response = gateway.post(
            "/v1/chat/completions",
            json={"model": BASE_MODEL, "messages": [{"role": "user", "content": "Hi"}],
                  "max_tokens": 2},
        )  # fmt: skip
        assert response.status_code == 200
