"""Embedded default, measured: vLLM start time and one chat's latency, direct vs through loragate.

Starts ``loragate serve`` (gateway + supervised vLLM CPU server) on free ports, times how long
the engine takes to become ready, then sends the same non-streaming and streaming chats
directly to vLLM and through the gateway, alternating, and prints a table. The table is
also written to docs/benchmarks.md with the machine and the date. Nothing here asserts on
time.

    .venv/bin/python bench/serving_latency.py [--requests 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import free_port, machine_description, percentile, wait_ready, write_section

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
MODEL = "SmolLM2-135M-Instruct"
PROMPT = [{"role": "user", "content": "Name three colours of the rainbow."}]
SECTION = "## Serving latency (embedded default)"


def timed_chat(client: httpx.Client, url: str, stream: bool) -> tuple[float, float]:
    """(total seconds, seconds to the first content chunk; equal to total when not streaming)."""
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 16, "temperature": 0,
            "stream": stream}  # fmt: skip
    started = time.perf_counter()
    if not stream:
        response = client.post(url, json=body)
        response.raise_for_status()
        total = time.perf_counter() - started
        return total, total
    first = None
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return total, first if first is not None else total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    if not (MODEL_DIR / "config.json").exists():
        raise SystemExit("run `loragate model prepare` first")

    port, engine_port = free_port(), free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="loragate-bench-"))
    env = {**os.environ, "LORAGATE_DATA_DIR": str(data_dir), "LORAGATE_PORT": str(port),
           "LORAGATE_ENGINE_PORT": str(engine_port), "LORAGATE_BASE_MODEL_PATH": str(MODEL_DIR),
           "LORAGATE_AUTH_ENABLED": "false", "LORAGATE_LOG_LEVEL": "WARNING"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        start_s = wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        rows = measure(port, engine_port, args.requests)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    report(start_s, rows, args.requests)


def measure(port: int, engine_port: int, requests: int) -> dict[str, dict[str, list[float]]]:
    targets = {
        "vLLM direct": f"http://127.0.0.1:{engine_port}/v1/chat/completions",
        "through loragate": f"http://127.0.0.1:{port}/v1/chat/completions",
    }
    rows: dict[str, dict[str, list[float]]] = {
        name: {"chat": [], "stream": [], "ttft": []} for name in targets
    }
    with httpx.Client(timeout=120) as client:
        for url in targets.values():  # warm-up: first requests compile kernels
            timed_chat(client, url, stream=False)
            timed_chat(client, url, stream=True)
        for _ in range(requests):
            for name, url in targets.items():  # alternate, so drift hits both alike
                rows[name]["chat"].append(timed_chat(client, url, stream=False)[0])
                total, first = timed_chat(client, url, stream=True)
                rows[name]["stream"].append(total)
                rows[name]["ttft"].append(first)
    return rows


def report(start_s: float, rows: dict[str, dict[str, list[float]]], requests: int) -> None:
    ms = 1000.0
    lines = [
        SECTION,
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine_description()}"
        f" · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{requests} sequential requests per path, max_tokens=16, temperature 0 · "
        "`python bench/serving_latency.py`",
        "",
        f"vLLM CPU server start (launch to ready): **{start_s:.1f} s**",
        "",
        "| path | chat p50 ms | chat p95 ms | stream p50 ms | TTFT p50 ms | TTFT p95 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, values in rows.items():
        lines.append(
            f"| {name} | {statistics.median(values['chat']) * ms:.1f} | "
            f"{percentile(values['chat'], 0.95) * ms:.1f} | "
            f"{statistics.median(values['stream']) * ms:.1f} | "
            f"{statistics.median(values['ttft']) * ms:.1f} | "
            f"{percentile(values['ttft'], 0.95) * ms:.1f} |"
        )
    direct, gateway = rows["vLLM direct"], rows["through loragate"]
    added = statistics.median(gateway["chat"]) - statistics.median(direct["chat"])
    added_ttft = statistics.median(gateway["ttft"]) - statistics.median(direct["ttft"])
    lines += [
        "",
        f"Added by the gateway (difference of medians): chat {added * ms:+.1f} ms, "
        f"TTFT {added_ttft * ms:+.1f} ms. Sequential requests on a 2-core machine that also "
        "runs vLLM; the overhead benchmark against LiteLLM is a separate suite.",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    write_section(SECTION, table)


if __name__ == "__main__":
    main()
