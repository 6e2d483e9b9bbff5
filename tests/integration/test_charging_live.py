"""What a key is charged on the real vLLM, with the official SDK (issue 19): a stream the
client drops after a few chunks is charged what vLLM produced, and requests sent together
cannot carry a key past a small monthly budget."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from tests.integration.conftest import BASE_MODEL, sdk_client
from tests.support import ThreadedGateway, create_keys, read_conversation, wait_until

ASK = [{"role": "user", "content": "Say hi."}]


def _key(gateway: ThreadedGateway, admin: str, **quota: int) -> tuple[str, str]:
    response = gateway.post(
        "/v1/admin/keys",
        headers={"Authorization": f"Bearer {admin}"},
        json={"scope": "chat", "name": "charging-test", "quota": quota},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["key"]


def _usage(gateway: ThreadedGateway, admin: str, key_id: str) -> dict[str, int]:
    card = gateway.get(
        f"/v1/admin/keys/{key_id}/quota", headers={"Authorization": f"Bearer {admin}"}
    )
    assert card.status_code == 200, card.text
    usage: dict[str, int] = card.json()["usage"]
    return usage


def _chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=BASE_MODEL, messages=ASK, **kwargs)


def test_a_dropped_stream_is_charged_what_vllm_produced(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    gateway = gateway_factory()
    admin = create_keys(gateway.settings.resolved_database_url)["admin"]
    key_id, key = _key(gateway, admin, tokens_per_minute=100_000, monthly_tokens=1_000_000)
    stream = _chat(
        sdk_client(gateway.base_url, key), stream=True, max_tokens=256,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = iter(stream)
    first = next(chunks)  # the role chunk
    seen = [next(chunks) for _ in range(5)]
    assert all(chunk.choices[0].delta.content is not None for chunk in seen)
    stream.close()  # the client goes away after 5 content chunks

    url = gateway.settings.resolved_database_url
    row = wait_until(lambda: read_conversation(url, first.id), 60, "the dropped stream's row")
    assert row.status == "cancelled"
    # vLLM's own count of the prompt and of the tokens relayed before the client went away:
    # at least the 5 it read, fewer than the 256 it asked for.
    assert row.prompt_tokens > 5 and 5 <= row.completion_tokens < 256
    charged = row.prompt_tokens + row.completion_tokens
    wait_until(
        lambda: _usage(gateway, admin, key_id)["tokens_last_minute"] == charged,
        30, "the dropped stream's tokens counted against the key",
    )  # fmt: skip
    usage = _usage(gateway, admin, key_id)
    assert usage["tokens_this_month"] == charged and usage["tokens_held"] == 0


def test_concurrent_requests_cannot_overrun_a_small_budget(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    """The issue's repro: with a little budget left, 8 requests at once were all admitted."""
    gateway = gateway_factory()
    keys = create_keys(gateway.settings.resolved_database_url)
    admin = keys["admin"]
    # One answer shows the gateway how much longer than its text this model's prompt is
    # (the chat template's own system prompt); holds include that from then on.
    _chat(sdk_client(gateway.base_url, keys["chat"]), max_tokens=1)
    budget = 200
    key_id, key = _key(gateway, admin, monthly_tokens=budget)
    client = sdk_client(gateway.base_url, key)

    def ask(_: int) -> Any:
        try:
            return _chat(client, max_tokens=32, extra_body={"ignore_eos": True})
        except openai.RateLimitError as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    answered = [result for result in results if not isinstance(result, Exception)]
    refused = [result for result in results if isinstance(result, openai.RateLimitError)]
    assert len(answered) + len(refused) == 8
    # Each answer uses its prompt and 32 tokens, so the 8 would need well over the budget.
    spent = sum(result.usage.total_tokens for result in answered)
    assert answered and refused and 8 * (spent // len(answered)) > budget
    usage = _usage(gateway, admin, key_id)
    assert usage["tokens_this_month"] == spent <= budget
    assert usage["tokens_held"] == 0
