"""``loragate serve`` and ``loragate engine run``: the gateway with its embedded engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from adapters.supervisor import EngineSupervisor
from core.settings import Settings
from gateway.app import create_app
from gateway.http_protocol import limit_headers
from gateway.wiring import engine_launch

log = logging.getLogger("loragate.serve")


def serve(settings: Settings) -> None:
    if settings.workers > 1:
        _prepare_multiprocess_metrics(settings)
        # Several workers need an import string; each builds its app from the environment.
        uvicorn.run(
            "gateway.app:create_app_from_env",
            factory=True,
            workers=settings.workers,
            **server_options(settings),
        )
        return
    with asyncio.Runner(loop_factory=_fastest_event_loop()) as runner:
        runner.run(_serve_one(settings))


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the gateway, the same for one worker and several (and for the
    tests' in-process gateways)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": limit_headers(settings.requests.max_header_bytes),
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "log_config": None,  # our structured logging (core/logs.py) stays in charge
        "access_log": False,  # requests are logged by the app, with their ids
    }


def _fastest_event_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is installed (uvicorn[standard] brings it on Linux and macOS), as
    uvicorn's own ``loop="auto"`` picks for the workers: it takes about a third off the
    gateway's per-request cost against the default selector loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    """Give the workers one fresh directory for their metric files. prometheus_client reads
    PROMETHEUS_MULTIPROC_DIR when a worker first imports it, so it is set here, before
    uvicorn spawns them; the settings variable tells each worker's app to merge them."""
    # Local to this process tree by default: a data_dir shared between replicas must not
    # hold them, or the replicas would add up each other's metrics.
    directory = settings.metrics_multiproc_dir or Path(tempfile.mkdtemp(prefix="loragate-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # an earlier run's files would add up
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    os.environ["LORAGATE_METRICS_MULTIPROC_DIR"] = str(directory)


async def _serve_one(settings: Settings) -> None:
    supervisor = None
    if settings.engine.mode == "embedded":
        supervisor = EngineSupervisor(engine_launch(settings))
        await supervisor.start()
    config = uvicorn.Config(create_app(settings), **server_options(settings))
    server = uvicorn.Server(config)
    _exit_quietly_on_signals(server)
    log.info("gateway listening", extra={"url": f"http://{settings.host}:{settings.port}"})
    try:
        await server.serve()
    finally:
        if supervisor is not None:
            await supervisor.stop()


def _exit_quietly_on_signals(server: uvicorn.Server) -> None:
    # uvicorn re-raises the SIGTERM/SIGINT it handled once it has drained, which would kill
    # this process before the supervisor stops vLLM. With these handlers in place the
    # re-raised signal only asks for the exit already under way.
    def request_exit(signum: int, frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_exit)


async def run_engine(settings: Settings) -> None:
    """Run only the supervised vLLM until SIGINT/SIGTERM (tests, or a split deployment)."""
    supervisor = EngineSupervisor(engine_launch(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor.stop()
