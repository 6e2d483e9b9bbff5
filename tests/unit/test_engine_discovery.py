"""Engine discovery: a ``dns+http://NAME:PORT`` entry follows NAME's addresses as they change.

A fake resolver stands in for the headless Service's DNS; the replicas it names are loopback
addresses (127.0.0.1 and 127.0.0.2) with a real server on one port, so health probes are real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from adapters.engine import EngineClient, EngineClientConfig, Replica
from adapters.engine_discovery import EngineDiscovery, parse_dns_entry
from core.settings import Settings
from tests.support import free_port


class FakeDns:
    """Answers each lookup with the current list, or raises like a failed lookup."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.failing = False
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if self.failing:
            raise OSError("Temporary failure in name resolution")
        return list(self.addresses)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A /health server on 127.0.0.1 and 127.0.0.2, one port: two "pods"."""

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    number = free_port()
    for host in ("127.0.0.1", "127.0.0.2"):
        await web.TCPSite(runner, host, number).start()
    yield number
    await runner.cleanup()


def _client(entry: str, dns: FakeDns) -> EngineClient:
    return EngineClient(EngineClientConfig(urls=(entry,)), resolver=dns)


async def test_replicas_follow_the_name_as_it_scales(port: int) -> None:
    dns = FakeDns("127.0.0.1")
    client = _client(f"dns+http://vllm-headless:{port}", dns)
    assert client.replicas == []  # nothing is known before the first lookup
    await client.start()
    try:
        assert dns.asked == ["vllm-headless"]
        assert [r.url for r in client.replicas] == [f"http://127.0.0.1:{port}"]
        assert client.ready
        first = client.replicas[0]

        dns.addresses = ["127.0.0.1", "127.0.0.2"]  # scaled up
        await client.discover()
        urls = [r.url for r in client.replicas]
        assert urls == [f"http://127.0.0.1:{port}", f"http://127.0.0.2:{port}"]
        assert client.replicas[0] is first  # kept, with its health and loaded adapters
        assert all(r.healthy for r in client.replicas)  # the new one was probed at once

        dns.addresses = ["127.0.0.2"]  # scaled down
        await client.discover()
        assert [r.url for r in client.replicas] == [f"http://127.0.0.2:{port}"]
    finally:
        await client.close()


async def test_a_new_replica_that_comes_up_is_announced(port: int) -> None:
    dns = FakeDns("127.0.0.1")
    client = _client(f"dns+http://vllm-headless:{port}", dns)
    seen: list[str] = []
    client.on_replica_up(lambda replica: seen.append(replica.url))
    await client.start()
    try:
        dns.addresses = ["127.0.0.1", "127.0.0.2"]
        await client.discover()
        # The reconciler listens for this to load the live adapters on the new pod.
        assert seen == [f"http://127.0.0.1:{port}", f"http://127.0.0.2:{port}"]
    finally:
        await client.close()


async def test_a_failed_lookup_keeps_the_last_replicas(port: int) -> None:
    dns = FakeDns("127.0.0.1", "127.0.0.2")
    client = _client(f"dns+http://vllm-headless:{port}", dns)
    await client.discover()
    before = list(client.replicas)
    dns.failing = True
    await client.discover()
    assert client.replicas == before
    await client.close()


async def test_the_discovery_loop_runs_on_its_interval(port: int) -> None:
    import asyncio

    dns = FakeDns("127.0.0.1")
    config = EngineClientConfig(
        urls=(f"dns+http://vllm-headless:{port}",), discovery_interval_s=0.05
    )
    client = EngineClient(config, resolver=dns)
    await client.start()
    try:
        dns.addresses = ["127.0.0.1", "127.0.0.2"]
        for _ in range(100):
            if len(client.replicas) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(client.replicas) == 2
    finally:
        await client.close()


async def test_fixed_urls_stay_beside_discovered_ones() -> None:
    dns = FakeDns("10.0.0.7", "fd00::7")
    discovery = EngineDiscovery(["http://gpu-1:8000", "dns+http://vllm:8000"], dns)
    assert discovery.urls() == ["http://gpu-1:8000"]
    urls = await discovery.refresh()
    assert urls == ["http://gpu-1:8000", "http://10.0.0.7:8000", "http://[fd00::7]:8000"]


def test_fixed_urls_alone_never_look_anything_up() -> None:
    client = EngineClient(EngineClientConfig(urls=("http://gpu-1:8000",)))
    assert not client.discovery.dynamic
    assert [r.url for r in client.replicas] == ["http://gpu-1:8000"]
    assert isinstance(client.replicas[0], Replica)


@pytest.mark.parametrize("entry", ["dns+ftp://vllm:8000", "dns+http://", "dns+http://vllm:8000/x"])
def test_a_malformed_entry_is_refused_at_construction(entry: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)dns"):
        EngineClientConfig(urls=(entry,))


def test_parse_defaults_the_port() -> None:
    assert parse_dns_entry("dns+https://vllm").port == 443


def test_settings_take_a_dns_entry() -> None:
    settings = Settings(engine_mode="external", engine_urls=["dns+http://vllm-headless:8000/v1"])
    assert settings.engine.urls == ["dns+http://vllm-headless:8000"]
    with pytest.raises(ValueError, match=r"(?i)dns"):
        Settings(engine_mode="external", engine_urls=["dns+ftp://vllm:8000"])


def test_the_trainer_refuses_a_dns_entry() -> None:
    from core.errors import ConfigError
    from gateway.wiring import trainer_engine_url

    settings = Settings(engine_mode="external", engine_urls=["dns+http://vllm-headless:8000"])
    with pytest.raises(ConfigError, match="fixed vLLM URL"):
        trainer_engine_url(settings)
