"""The default output limit (issue 22): a chat or completion request that sets neither
``max_tokens`` nor ``max_completion_tokens`` reaches vLLM with ``default_max_tokens``, unless
its prompt leaves less room in the context than that (then vLLM's own limit, the rest of the
window, is the smaller one and is left to apply). A request's own limit always wins.

``ChatService`` against the scripted vLLM of test_charging.py, which keeps every body sent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from core.settings import load_settings
from core.store.keys import Principal, Quota
from gateway.chat import ChatLimits, ChatService
from gateway.metrics import GatewayMetrics
from gateway.schemas import ChatCompletionRequest
from tests.unit.test_charging import MODEL, Records, Router, StandIn, served

CONTEXT = 2048
DEFAULT = 512


@pytest.fixture
async def service() -> AsyncIterator[tuple[ChatService, StandIn]]:
    stand_in = StandIn(ending="done")
    async with served(stand_in) as engine:
        limits = ChatLimits(CONTEXT, 100, 8, default_max_tokens=DEFAULT)
        metrics = GatewayMetrics(CollectorRegistry())
        chat = ChatService(engine, Router(), Records(), metrics, limits)  # type: ignore[arg-type]
        yield chat, stand_in


async def _sent(service: tuple[ChatService, StandIn], content: str, **fields: Any) -> Any:
    """The body vLLM got for a one-message request with ``fields``."""
    chat, stand_in = service
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}
    request = msgspec.convert(body, ChatCompletionRequest)
    await chat.complete(request, Principal("key_a", "chat", Quota()), time.perf_counter())
    return stand_in.bodies[-1]


async def test_a_request_without_a_limit_gets_the_default(service: Any) -> None:
    assert (await _sent(service, "Say hi."))["max_tokens"] == DEFAULT


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_a_request_with_its_own_limit_keeps_it(service: Any, field: str) -> None:
    sent = await _sent(service, "Say hi.", **{field: 7})
    assert sent[field] == 7 and sent.get("max_tokens", 7) == 7


async def test_the_default_is_capped_by_the_context(service: Any) -> None:
    # About 1,700 tokens of prompt (4 bytes a token): 512 more would pass the 2,048 window.
    sent = await _sent(service, "word " * 1360)
    assert "max_tokens" not in sent  # vLLM then stops at the window's end, under 512


def test_the_setting_defaults_to_a_limit_and_can_be_turned_off(tmp_path: Any) -> None:
    assert load_settings(data_dir=tmp_path).requests.default_max_tokens == DEFAULT
    assert (
        load_settings(data_dir=tmp_path, default_max_tokens=None).requests.default_max_tokens
        is None
    )
    # Bigger than a small context is fine: it is capped per request.
    small = load_settings(data_dir=tmp_path, max_model_len=256)
    assert small.requests.default_max_tokens == DEFAULT
