"""Quotas over HTTP on the real vLLM, with the official SDK: what a client sees when a limit
is reached (429, OpenAI's error shape, Retry-After), per replica in memory and shared by
two replicas through the real Redis and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import fresh_postgres_database
from tests.integration.conftest import BASE_MODEL, sdk_client
from tests.support import ThreadedGateway, create_keys, metric_value, wait_until

ASK = [{"role": "user", "content": "Say hi."}]
TPM = 150
MAX_TOKENS = 4  # each chat's, unless it asks for more


def _key(gateway: ThreadedGateway, admin: str, **quota: int) -> tuple[str, str]:
    response = gateway.post(
        "/v1/admin/keys",
        headers={"Authorization": f"Bearer {admin}"},
        json={"scope": "chat", "name": "quota-test", "quota": quota},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["key"]


def _chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    return client.chat.completions.create(model=BASE_MODEL, messages=ASK, **kwargs)


def test_requests_per_minute_give_a_429_with_retry_after(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    gateway = gateway_factory()
    admin = create_keys(gateway.settings.resolved_database_url)["admin"]
    key_id, key = _key(gateway, admin, requests_per_minute=2)
    client = sdk_client(gateway.base_url, key)
    _chat(client)
    _chat(client)
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(client)
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "rate_limit_exceeded"
    assert error["type"] == "rate_limit_error" and "2 requests per minute" in error["message"]
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    metrics = gateway.get("/metrics").text
    assert metric_value(metrics, "loragate_rate_limited_total", limit="rpm") == 1.0
    card = gateway.get(
        f"/v1/admin/keys/{key_id}/quota", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    assert card["quota"]["requests_per_minute"] == 2
    assert card["usage"]["requests_last_minute"] == 2  # the refused one is not counted


def test_two_replicas_share_streams_and_tokens_through_redis(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    with fresh_postgres_database() as postgres_url:
        replicas = [
            gateway_factory(database_url=postgres_url, quota_backend="redis") for _ in range(2)
        ]
        try:
            _share_streams_and_tokens(replicas, postgres_url)
        finally:
            for replica in replicas:  # before their database goes
                replica.stop()


def _share_streams_and_tokens(replicas: list[ThreadedGateway], postgres_url: str) -> None:
    admin = create_keys(postgres_url)["admin"]
    _, streamer = _key(replicas[0], admin, concurrent_streams=1)
    _, spender = _key(replicas[0], admin, tokens_per_minute=TPM)

    # A long answer, so the stream is surely still open upstream while the client holds it:
    # a short one is written out whole, and its slot given back, before the client reads it.
    held = _chat(
        sdk_client(replicas[0].base_url, streamer), stream=True,
        max_tokens=512, extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = iter(held)
    next(chunks)  # the first chunk: the stream is open and holds the key's only slot
    with pytest.raises(openai.RateLimitError, match="concurrent streams"):
        _chat(sdk_client(replicas[1].base_url, streamer), stream=True)
    held.close()  # the client goes away: its slot is given back
    wait_until(lambda: _admitted(replicas[1], streamer), 30, "the stream slot given back")

    clients = [sdk_client(replica.base_url, spender) for replica in replicas]
    used = answered = hold = 0
    sizes: list[int] = []
    while True:
        try:
            completion = _chat(clients[answered % 2])
        except openai.RateLimitError as exc:
            assert f"{TPM} tokens per minute" in str(exc)
            break
        # Admitted only while the tokens served in the last minute were below the limit...
        assert used < TPM, sizes
        assert completion.usage is not None
        sizes.append(completion.usage.total_tokens)
        used += completion.usage.total_tokens
        # The next request's hold: its prompt (the same) and its max_tokens. Its real size
        # may be less: the model may end its answer early.
        hold = completion.usage.prompt_tokens + MAX_TOKENS
        answered += 1
    # ... and refused only once one more request's hold would not fit, on either replica:
    # never earlier.
    assert used + hold > TPM and answered >= 2, sizes


def _admitted(replica: ThreadedGateway, key: str) -> bool:
    try:
        for _ in _chat(sdk_client(replica.base_url, key), stream=True):
            pass
    except openai.RateLimitError:
        return False
    return True


def test_monthly_budget_and_the_cli(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    gateway = gateway_factory()
    settings_env = {"LORAGATE_DATA_DIR": str(gateway.settings.data_dir)}
    admin = create_keys(gateway.settings.resolved_database_url)["admin"]
    key_id, key = _key(gateway, admin)
    shown = _cli(settings_env, "keys", "quota", key_id, "--monthly-tokens", "40", "--rpm", "100")
    assert "monthly_tokens" in shown and "(key)" in shown
    client = sdk_client(gateway.base_url, key)  # first use: the key is read with its quota
    _chat(client)  # its hold (the prompt's estimate + 4) fits in 40; it uses more than half
    # The next one's hold no longer fits in what is left.
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(client)
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["code"] == "insufficient_quota"
    unset = _cli(settings_env, "keys", "quota", key_id, "--monthly-tokens", "none")
    assert "unlimited" in unset
    with pytest.raises(subprocess.CalledProcessError):
        _cli(settings_env, "keys", "quota", key_id, "--rpm", "0")
    bad = httpx.put(
        f"{gateway.base_url}/v1/admin/keys/{key_id}/quota",
        headers={"Authorization": f"Bearer {admin}"},
        json={"requests_per_minute": -3, "surprise": 1},
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.get(
        f"{gateway.base_url}/v1/admin/keys/key_{uuid.uuid4().hex[:16]}/quota",
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"


def _cli(env: dict[str, str], *args: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout
