"""vLLM routes the gateway relays as they are, ``/tokenize`` and ``/detokenize``, behind the
gateway's keys and model names: the ``model`` a client names is resolved like chat's (an
alias to the version it serves) before vLLM sees it. (The Responses API, which vLLM also
serves, is ``gateway.responses``: it is logged and charged like chat.)
"""

from __future__ import annotations

import uuid
from typing import Any

from adapters.engine import EngineClient
from core.store.keys import Principal
from gateway.errors import InvalidRequest
from gateway.routing import ModelRouter, Route


class EngineRelay:
    def __init__(self, engine: EngineClient, router: ModelRouter) -> None:
        self.engine = engine
        self.router = router

    async def tokenizer(self, path: str, body: dict[str, Any], principal: Principal) -> Any:
        """``/tokenize`` or ``/detokenize``: the model's tokenizer, through vLLM."""
        payload = dict(body)
        if isinstance(payload.get("model"), str):
            payload["model"] = (await self._route(payload, principal)).upstream_model
        return await self.engine.post_json(path, payload, self.engine.pick())

    async def _route(self, body: dict[str, Any], principal: Principal) -> Route:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model: a model name is required.", param="model")
        return await self.router.resolve(model, principal.key_id or uuid.uuid4().hex)
