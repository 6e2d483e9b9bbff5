"""The real stack: one embedded ``loragate serve`` (gateway + supervised vLLM CPU server)
per test session, and in-process gateways pointed at its vLLM for store-specific tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from core.settings import load_settings
from core.store import Database
from tests.support import ThreadedGateway, create_keys, free_port, wait_until
from trainer.sample import sample_adapter

BASE_MODEL = "SmolLM2-135M-Instruct"
ENGINE_START_TIMEOUT_S = 900


@dataclass
class EmbeddedServer:
    process: subprocess.Popen[bytes]
    base_url: str
    engine_url: str
    database_url: str
    data_dir: Path
    keys: dict[str, str]
    log_path: Path

    def client(self, scope: str = "chat", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=self.keys[scope], max_retries=0, **kwargs
        )

    def engine_metric(self, name: str) -> float:
        """A gauge from vLLM's own /metrics, summed over its label sets."""
        text = httpx.get(f"{self.engine_url}/metrics", timeout=10).text
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        ]
        return sum(values)

    def wait_running_requests(self, count: int, timeout_s: float, what: str) -> None:
        """Wait for vLLM's own gauge; it refreshes on its own schedule, hence the wait."""
        wait_until(
            lambda: self.engine_metric("vllm:num_requests_running") == count, timeout_s, what
        )

    def unload_adapters(self) -> None:
        """Leave the shared vLLM with no adapter a test loaded (each test has its own store)."""
        for model in httpx.get(f"{self.engine_url}/v1/models").json()["data"]:
            if model.get("parent"):
                httpx.post(
                    f"{self.engine_url}/v1/unload_lora_adapter", json={"lora_name": model["id"]}
                )

    def engine_pid(self) -> int:
        """The vLLM API server process the supervisor started."""
        import psutil

        for child in psutil.Process(self.process.pid).children(recursive=True):
            if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                return int(child.pid)
        raise AssertionError("no vLLM child process found")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="session")
def embedded_server(
    prepared_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedServer]:
    data_dir = tmp_path_factory.mktemp("embedded")
    port, engine_port = free_port(), free_port()
    env = {
        **os.environ,
        "LORAGATE_DATA_DIR": str(data_dir),
        "LORAGATE_PORT": str(port),
        "LORAGATE_ENGINE_PORT": str(engine_port),
        "LORAGATE_BASE_MODEL_PATH": str(prepared_model),
        "LORAGATE_MAX_MODEL_LEN": "2048",
        "LORAGATE_ENGINE_RESTART_BACKOFF_S": "1",
        "LORAGATE_LOG_FORMAT": "json",
        # vLLM keeps Responses API answers (GET, cancel, previous_response_id, background)
        # only with its store on; off, the gateway's 404s are tested on the stand-in.
        "VLLM_ENABLE_RESPONSES_API_STORE": "1",
    }
    database_url = f"sqlite+aiosqlite:///{data_dir / 'loragate.db'}"
    keys = create_keys(database_url)
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = EmbeddedServer(
        process,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{engine_port}",
        database_url,
        data_dir,
        keys,
        log_path,
    )
    try:
        wait_until(
            lambda: server.ready() or _raise_if_exited(process, log_path),
            ENGINE_START_TIMEOUT_S,
            "the embedded vLLM to become ready",
            step_s=1,
        )
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()


def _raise_if_exited(process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise AssertionError(f"loragate serve exited with {process.returncode}:\n{tail}")
    return False


@pytest.fixture
def gateway_factory(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> Iterator[Callable[..., ThreadedGateway]]:
    """Start in-process gateways (external engine mode) on the shared vLLM server."""
    started: list[ThreadedGateway] = []

    def start(**overrides: Any) -> ThreadedGateway:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "engine_mode": "external",
            "engine_urls": embedded_server.engine_url,
            "base_model_name": BASE_MODEL,
            "log_format": "text",
        }
        values.update(overrides)
        gateway = ThreadedGateway.start(load_settings(**values))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def store_gateway(
    gateway_factory: Callable[..., ThreadedGateway], database_url: str
) -> tuple[ThreadedGateway, dict[str, str]]:
    """A gateway on the parametrized store (SQLite, then PostgreSQL) with its own keys."""
    keys = create_keys(database_url)
    return gateway_factory(database_url=database_url), keys


@pytest.fixture
async def http_gateway(database_url: str, tmp_path: Path) -> AsyncIterator[ThreadedGateway]:
    """A real gateway on the parametrized store with no vLLM (nothing listens on its engine
    port): feedback, flags and review need only the store."""
    settings = load_settings(
        data_dir=tmp_path, engine_mode="external", database_url=database_url,
        engine_urls=f"http://127.0.0.1:{free_port()}", log_format="text",
    )  # fmt: skip
    gateway = await asyncio.to_thread(ThreadedGateway.start, settings)
    yield gateway
    await asyncio.to_thread(gateway.stop)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated store on the parametrized database (SQLite, then PostgreSQL)."""
    database = Database(database_url)
    await database.migrate()
    yield database
    await database.dispose()


def sdk_client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def loras(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small real PEFT LoRAs on the prepared base, with different random weights."""
    root = tmp_path_factory.mktemp("loras")
    return [sample_adapter(root / f"lora{seed}", prepared_model, seed=seed) for seed in range(3)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell a failed test (the
    browser tests save a screenshot then)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)
