"""HTTP client for one or more vLLM OpenAI-compatible servers.

One pooled ``aiohttp.ClientSession`` serves every replica. A background loop probes each
replica's ``/health``; requests go to the healthy replica with the fewest requests in flight.
Transport failures become the typed errors of ``adapters.errors`` so the gateway can map them
to HTTP statuses in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from adapters.engine_discovery import EngineDiscovery, Resolver, system_resolver
from adapters.errors import (
    EngineError,
    EngineRejected,
    EngineStreamBroken,
    EngineTimeout,
    EngineUnavailable,
)

log = logging.getLogger("loragate.engine")

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode
_JSON_CONTENT = {"Content-Type": "application/json"}
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
CHAT_PATH = "/v1/chat/completions"
_LONGEST_EVENT = 4 * 2**20  # bytes in one SSE line (logprobs of a long answer are large)
# How long a client of vLLM keeps an idle connection: below uvicorn's (and so vLLM's) 5 s,
# so that it is dropped here before the server can close it under a request about to be sent.
ENGINE_KEEPALIVE_S = 4.0


@dataclass
class Replica:
    url: str
    healthy: bool = False
    in_flight: int = 0
    consecutive_failures: int = 0
    adapters: frozenset[str] = frozenset()  # LoRA names loaded there, kept by the reconciler


@dataclass(frozen=True)
class EngineClientConfig:
    urls: tuple[str, ...]
    api_key: str = ""
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 300.0
    health_interval_s: float = 2.0
    max_connections: int = 512
    # How often each ``dns+http://NAME:PORT`` entry is looked up again (adapters.engine_discovery).
    discovery_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("urls: at least one engine URL is needed")
        if self.discovery_interval_s <= 0:
            raise ValueError("discovery_interval_s: must be positive")
        EngineDiscovery(self.urls)  # a malformed dns+ entry fails here, not at the first lookup


class EngineClient:
    def __init__(self, config: EngineClientConfig, resolver: Resolver = system_resolver) -> None:
        self.config = config
        self.discovery = EngineDiscovery(config.urls, resolver)
        self.replicas = [Replica(url) for url in self.discovery.urls()]
        self._session: aiohttp.ClientSession | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._discovery_task: asyncio.Task[None] | None = None
        self._on_up: list[Callable[[Replica], None]] = []

    def _http(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use: it belongs to the event loop that runs it.

        aiohttp, not httpx: on the gateway's hot path httpx took more than half of the
        gateway's own CPU time per request (measured with py-spy, bench/overhead.py)."""
        if self._session is None:
            config = self.config
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {config.api_key}"} if config.api_key else {},
                connector=aiohttp.TCPConnector(
                    limit=config.max_connections, keepalive_timeout=ENGINE_KEEPALIVE_S
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=config.connect_timeout_s,
                    sock_read=config.request_timeout_s,  # the longest silence, not the total
                ),
                read_bufsize=_LONGEST_EVENT // 2,  # aiohttp reads lines up to twice this
            )
        return self._session

    def on_replica_up(self, callback: Callable[[Replica], None]) -> None:
        """Call ``callback(replica)`` when a replica turns healthy (say, after a restart)."""
        self._on_up.append(callback)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        await self.discover()
        await self.check_health()
        self._health_task = asyncio.create_task(self._health_loop(), name="engine-health")
        if self.discovery.dynamic:
            self._discovery_task = asyncio.create_task(
                self._discovery_loop(), name="engine-discovery"
            )

    async def close(self) -> None:
        for task in (self._health_task, self._discovery_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close()

    @property
    def ready(self) -> bool:
        return any(replica.healthy for replica in self.replicas)

    async def check_health(self) -> None:
        await asyncio.gather(*(self._probe(replica) for replica in self.replicas))

    async def wait_ready(self, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.ready:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.5)
            await self.discover()
            await self.check_health()
        return True

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            await self.check_health()

    async def discover(self) -> None:
        """Follow the DNS entries: add the replicas that appeared, drop those that left.

        A replica keeps its object (health, in-flight count, loaded adapters) while its URL
        stays; a new one starts unhealthy, and its first good probe tells the reconciler to
        load the live adapters there before it takes traffic for them."""
        if not self.discovery.dynamic:
            return
        urls = await self.discovery.refresh()
        known = {replica.url: replica for replica in self.replicas}
        for url in urls:
            if url not in known:
                log.info("engine replica found", extra={"url": url})
        for url in known.keys() - set(urls):
            log.info("engine replica gone", extra={"url": url})
        self.replicas = [known.get(url) or Replica(url) for url in urls]
        new = [replica for replica in self.replicas if replica.url not in known]
        await asyncio.gather(*(self._probe(replica) for replica in new))

    async def _discovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.discovery_interval_s)
            await self.discover()

    async def _probe(self, replica: Replica) -> None:
        try:
            async with self._http().get(f"{replica.url}/health", timeout=_PROBE_TIMEOUT) as answer:
                healthy = answer.status == 200
        except (aiohttp.ClientError, TimeoutError):
            healthy = False
        self._mark(replica, healthy)

    def _mark(self, replica: Replica, healthy: bool) -> None:
        came_up = healthy and not replica.healthy
        if healthy != replica.healthy:
            log.info("engine replica %s", "up" if healthy else "down", extra={"url": replica.url})
        replica.healthy = healthy
        if not healthy:
            replica.adapters = frozenset()  # a restarted vLLM comes back without them
        if came_up:
            for callback in self._on_up:
                callback(replica)
        replica.consecutive_failures = 0 if healthy else replica.consecutive_failures + 1

    def pick(self, model: str | None = None) -> Replica:
        """The least busy healthy replica, among those that have ``model`` loaded if any do."""
        healthy = [replica for replica in self.replicas if replica.healthy]
        if not healthy:
            raise EngineUnavailable("no engine replica is healthy; retry shortly")
        having = [replica for replica in healthy if model in replica.adapters]
        return min(having or healthy, key=lambda replica: replica.in_flight)

    def replica_at(self, url: str) -> Replica | None:
        """The configured replica at ``url`` (where a stored response was made), if any."""
        return next((replica for replica in self.replicas if replica.url == url), None)

    def serving(self, model: str) -> bool:
        return any(replica.healthy and model in replica.adapters for replica in self.replicas)

    # -- requests ------------------------------------------------------------------
    async def get_json(self, path: str, replica: Replica | None = None) -> Any:
        replica = replica or self.pick()
        async with self._request(replica, "GET", path) as response:
            return _json_decode(await response.read())

    async def get_text(self, path: str, replica: Replica | None = None) -> str:
        replica = replica or self.pick()
        async with self._request(replica, "GET", path) as response:
            return (await response.read()).decode()

    async def post_json(self, path: str, body: Any, replica: Replica) -> Any:
        async with self._request(replica, "POST", path, body) as response:
            raw = await response.read()
            return _json_decode(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()

    async def chat(
        self, payload: dict[str, Any], path: str = CHAT_PATH, replica: Replica | None = None
    ) -> dict[str, Any]:
        """A chat (or, at ``path``, a text) completion, on a replica that has its model
        (or on ``replica``: the one that keeps a stored response)."""
        replica = replica or self.pick(payload.get("model"))
        async with self._request(replica, "POST", path, payload) as response:
            body: dict[str, Any] = _json_decode(await response.read())
            return body

    async def stream_chat(
        self, payload: dict[str, Any], path: str = CHAT_PATH, replica: Replica | None = None
    ) -> EngineStream:
        """Open a streaming chat; raises before returning if the engine refuses it."""
        replica = replica or self.pick(payload.get("model"))
        return await self.open_stream(replica, "POST", path, payload)

    async def open_stream(
        self, replica: Replica, method: str, path: str, payload: Any = None
    ) -> EngineStream:
        """Any streamed answer (a stored response's events too); raises if it is refused."""
        context = self._request(replica, method, path, payload)
        response = await context.__aenter__()
        return EngineStream(context, response)

    @contextlib.asynccontextmanager
    async def _request(
        self, replica: Replica, method: str, path: str, payload: Any = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        body = None if payload is None else _json_encode(payload)
        replica.in_flight += 1
        try:
            try:
                response = await self._http().request(
                    method, f"{replica.url}{path}", data=body,
                    headers=None if body is None else _JSON_CONTENT,
                )  # fmt: skip
            except aiohttp.ConnectionTimeoutError as exc:
                self._mark(replica, False)
                raise EngineUnavailable(f"engine {replica.url} did not accept") from exc
            except TimeoutError as exc:
                raise EngineTimeout(f"engine {replica.url} did not answer in time") from exc
            except aiohttp.ClientError as exc:
                self._mark(replica, False)
                raise EngineUnavailable(f"engine {replica.url} is unreachable: {exc}") from exc
            try:
                if response.status >= 400:
                    raise _rejection(response.status, await response.read())
                yield response
            except TimeoutError as exc:  # the body stopped coming
                raise EngineTimeout(f"engine {replica.url} stopped answering") from exc
            except aiohttp.ClientError as exc:
                raise EngineStreamBroken(f"engine {replica.url} broke off: {exc}") from exc
            finally:
                # A body read to its end gives the connection back to the pool; one left
                # unread (a client gone mid-stream) closes it, which aborts the request in vLLM.
                response.release() if response.content.at_eof() else response.close()
        finally:
            replica.in_flight -= 1


class EngineStream:
    """Parsed SSE events of one upstream stream. Closing it aborts the upstream request:
    closing the connection mid-body is how vLLM learns the client went away."""

    def __init__(
        self,
        context: contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse],
        response: aiohttp.ClientResponse,
    ) -> None:
        self._context = context
        self._response = response
        self._closed = False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        done = False
        try:
            async for line in self._response.content:
                # After [DONE] the body is read to its end (vLLM ends it at once), so the
                # connection goes back to the pool: closing it unread would cost every
                # stream a new TCP connection.
                if done or not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                event: dict[str, Any] = _json_decode(data)
                if "error" in event:
                    raise _error_from_body(500, event)
                yield event
        except TimeoutError as exc:
            raise EngineTimeout("engine stopped sending tokens") from exc
        except aiohttp.ClientError as exc:
            raise EngineStreamBroken(f"engine stream broke: {exc}") from exc
        except ValueError as exc:  # an event that is not JSON, or longer than _LONGEST_EVENT
            raise EngineStreamBroken(f"engine sent an unreadable event: {exc}") from exc
        if not done:
            raise EngineStreamBroken("engine stream ended without [DONE]")

    async def lines(self) -> AsyncIterator[bytes]:
        """The body's lines as sent (SSE with event names: vLLM's Responses API)."""
        try:
            async for line in self._response.content:
                yield line
        except TimeoutError as exc:
            raise EngineTimeout("engine stopped sending") from exc
        except aiohttp.ClientError as exc:
            raise EngineStreamBroken(f"engine stream broke: {exc}") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(EngineError, aiohttp.ClientError):
                await self._context.__aexit__(None, None, None)


def _rejection(status: int, raw: bytes) -> EngineError:
    try:
        body = _json_decode(raw)
    except msgspec.DecodeError:
        body = {"message": raw[:500].decode(errors="replace")}
    if status >= 500 and status != 501:
        return EngineUnavailable(f"engine error {status}: {_message(body)}")
    return _error_from_body(status, body)


def _error_from_body(status_code: int, body: Any) -> EngineRejected:
    error = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        status_code = code
    return EngineRejected(status_code, _message(error), param=error.get("param"))


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)
