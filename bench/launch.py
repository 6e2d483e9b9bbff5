"""What the benchmarks start: ``loragate serve`` on a data directory and the ``loragate``
CLI. Built on the project's own command line, not on the tests' helpers; small random LoRAs
come from ``trainer.sample.sample_adapter``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from bench.report import free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent
MODEL = "SmolLM2-135M-Instruct"
MODEL_DIR = REPO / "data" / "models" / MODEL


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    base_url: str  # http://127.0.0.1:<port>
    engine_url: str  # http://127.0.0.1:<engine port>: the embedded vLLM
    log: Path


def start_gateway(
    data_dir: Path,
    env: dict[str, str] | None = None,
    *,
    model_dir: Path = MODEL_DIR,
    wait: bool = True,
    new_session: bool = False,
) -> Launched:
    """``loragate serve`` in embedded mode on free ports, logging to ``data_dir/serve.log``;
    ``env`` adds or overrides ``LORAGATE_*`` settings. Waits for /readyz unless told not to."""
    port, engine_port = free_port(), free_port()
    full_env = {
        **os.environ,
        "LORAGATE_DATA_DIR": str(data_dir),
        "LORAGATE_PORT": str(port),
        "LORAGATE_ENGINE_PORT": str(engine_port),
        "LORAGATE_BASE_MODEL_PATH": str(model_dir),
        **(env or {}),
    }
    if new_session:
        _exit_cleanly_on_sigterm()
    log = data_dir / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env=full_env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    base_url = f"http://127.0.0.1:{port}"
    if wait:
        wait_ready(f"{base_url}/readyz", process)
    return Launched(process, full_env, base_url, f"http://127.0.0.1:{engine_port}", log)


def _exit_cleanly_on_sigterm() -> None:
    """A server in its own session is stopped by the caller's ``finally``, which Python
    skips when SIGTERM (``timeout``, ``kill``) ends it: seen, a vLLM server left running
    for hours beside the next benchmark. SIGTERM now raises SystemExit, so ``finally`` runs."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_commands_and_exit)


# The ``loragate`` commands running now (a benchmark runs ``loragate train`` in a thread).
_COMMANDS: set[subprocess.Popen[str]] = set()


def _stop_commands_and_exit(signum: int, _frame: object) -> None:
    """Stop the commands first: exiting, asyncio.run joins the thread that waits on
    ``loragate train``, and a stopped benchmark went on waiting for its whole training run."""
    for command in list(_COMMANDS):
        command.terminate()
    sys.exit(128 + signum)


def loragate(env: dict[str, str], *args: str) -> str:
    """Run one ``loragate`` command with these settings; its standard output."""
    command = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args], env=env, cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _COMMANDS.add(command)
    try:
        stdout, stderr = command.communicate()
    finally:
        _COMMANDS.discard(command)
    if command.returncode != 0:
        raise SystemExit(f"loragate {' '.join(args)} failed:\n{stderr[-3000:]}")
    return stdout
