"""The cards of ``/v1/models`` and ``/v1/models/{id}``: the router's names, with the fields
vLLM gives its own cards (``root``, ``max_model_len``) copied from vLLM's list.

An alias has the ``root`` of the version it serves (the base model's while it has no live
version); an adapter version the one vLLM loaded it from. While vLLM is unreachable those
two fields are null: the names still come from the store.
"""

from __future__ import annotations

from typing import Any

from adapters.engine import EngineClient
from adapters.errors import EngineError
from gateway.errors import ModelNotFound
from gateway.routing import ModelRouter


async def model_cards(
    router: ModelRouter, engine: EngineClient, extra: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    cards = await router.list_models()
    upstream = await _engine_cards(engine)
    base = upstream.get(router.base_model_name, {})
    for card in cards:
        served = upstream.get(card.get("live") or card["id"]) or base
        card["root"] = served.get("root")
        card["max_model_len"] = base.get("max_model_len")
    return cards + (extra or [])


async def model_card(
    model_id: str,
    router: ModelRouter,
    engine: EngineClient,
    extra: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    for card in await model_cards(router, engine, extra):
        if card["id"] == model_id:
            return card
    raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")


async def _engine_cards(engine: EngineClient) -> dict[str, dict[str, Any]]:
    try:
        listing = await engine.get_json("/v1/models")
    except EngineError:
        return {}
    data = listing.get("data") if isinstance(listing, dict) else None
    return {card["id"]: card for card in data or [] if isinstance(card, dict) and "id" in card}
