"""Keeps every engine replica serving exactly the live and canary adapter versions.

Desired state: every version whose state is ``live`` or ``canary``. Actual state: the LoRA
models each replica lists in ``/v1/models``. Missing versions are loaded with
``/v1/load_lora_adapter``; versions this registry manages that are no longer wanted are
unloaded. Versions are immutable and names never reused, so nothing is ever reloaded in
place under an old name (vLLM's prefix cache could then serve stale results).

Runs on start, when the registry changes, when a replica comes (back) up, and every
``interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.engine import EngineClient, Replica
from adapters.errors import EngineError, EngineRejected, EngineUnavailable
from adapters.registry import Registry

log = logging.getLogger("loragate.reconciler")


@dataclass
class ReconcilerStats:
    loads: int = 0
    unloads: int = 0
    failures: int = 0
    last_load_seconds: float = 0.0


class Reconciler:
    def __init__(
        self,
        engine: EngineClient,
        registry: Registry,
        interval_s: float = 10.0,
        drain_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.interval_s = interval_s
        self.drain_s = drain_s
        self._unwanted_since: dict[str, float] = {}
        self._on_load_failure: list[Callable[[str, str], Awaitable[None]]] = []
        self._on_action: list[Callable[[str, float | None], None]] = []
        self.stats = ReconcilerStats()
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        registry.on_change(self.wake)
        engine.on_replica_up(lambda replica: self.wake())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_load_failure(self, callback: Callable[[str, str], Awaitable[None]]) -> None:
        """Await ``callback(version, error)`` when an engine refuses to load a version."""
        self._on_load_failure.append(callback)

    def on_action(self, callback: Callable[[str, float | None], None]) -> None:
        """Call ``callback(action, seconds)`` on every load (with its duration), unload or
        failure: how metrics see the reconciler."""
        self._on_action.append(callback)

    def _count(self, action: str, seconds: float | None = None) -> None:
        if action == "load":
            self.stats.loads += 1
            self.stats.last_load_seconds = seconds or 0.0
        elif action == "unload":
            self.stats.unloads += 1
        else:
            self.stats.failures += 1
        for callback in self._on_action:
            callback(action, seconds)

    def wake(self) -> None:
        self._wake.set()

    async def ensure_serving(self, name: str, timeout_s: float) -> None:
        """Wait (bounded) until some healthy replica has ``name`` loaded."""
        deadline = time.monotonic() + timeout_s
        while not self.engine.serving(name):
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"adapter {name} is not loaded on any engine yet")
            self.wake()
            self._done.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), max(0.05, deadline - time.monotonic()))

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:  # the loop must outlive any one failure; it is logged
                log.exception("reconcile failed")
            self._done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    async def reconcile(self) -> None:
        desired = {version.name: version.path for version in await self.registry.serving_versions()}
        for name in set(self._unwanted_since) & set(desired):
            del self._unwanted_since[name]
        managed = {version.name for version in await self.registry.versions()}
        for replica in [replica for replica in self.engine.replicas if replica.healthy]:
            try:
                await self._reconcile_replica(replica, desired, managed)
            except EngineError as exc:
                self._count("failure")
                log.warning("replica not reconciled", extra={"url": replica.url, "error": str(exc)})

    async def _reconcile_replica(
        self, replica: Replica, desired: dict[str, str], managed: set[str]
    ) -> None:
        loaded = await self._loaded(replica)
        for name in sorted(set(desired) - loaded):
            # vLLM answers a duplicate load with a 400 whose text is the only signal.
            if await self._load(replica, name, desired[name]):
                loaded.add(name)
        for name in sorted((loaded & managed) - set(desired)):
            # A version just retired may still be answering requests routed a moment ago;
            # it is unloaded once it has been unwanted for drain_s.
            first_seen = self._unwanted_since.setdefault(name, time.monotonic())
            if time.monotonic() - first_seen < self.drain_s:
                continue
            await self.engine.post_json("/v1/unload_lora_adapter", {"lora_name": name}, replica)
            loaded.discard(name)
            self._count("unload")
            log.info("adapter unloaded", extra={"version": name, "url": replica.url})
        replica.adapters = frozenset(loaded)

    async def _loaded(self, replica: Replica) -> set[str]:
        body = await self.engine.get_json("/v1/models", replica)
        return {model["id"] for model in body.get("data", []) if model.get("parent")}

    async def _load(self, replica: Replica, name: str, path: str) -> bool:
        started = time.monotonic()
        try:
            await self.engine.post_json(
                "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, replica
            )
        except (EngineRejected, EngineUnavailable) as exc:
            if not replica.healthy:
                raise  # the replica is gone, not the adapter: try again when it is back
            message = str(exc)
            if "already been loaded" in message:
                return True
            self._count("failure")
            log.error("adapter load refused", extra={"version": name, "error": message})
            for callback in self._on_load_failure:
                await callback(name, message)
            return False
        seconds = time.monotonic() - started
        self._count("load", seconds)
        log.info(
            "adapter loaded",
            extra={"version": name, "url": replica.url, "seconds": round(seconds, 3)},
        )
        return True
