"""Gateway overhead, side by side in one run: the same client, prompt and load sent (a)
straight to the upstream, (b) through loragate, (c) through a LiteLLM proxy configured for the
same upstream.

Two upstreams:
* a fast stub (bench/stub_upstream.py), which isolates each gateway's own cost, as LiteLLM's
  own overhead benchmark does; at each of ``--rps`` (50 and 200) requests per second;
* the real vLLM CPU server (started by ``loragate serve``), at ``--vllm-rps`` (a CPU serves
  a few requests per second).

Open loop: each request is its own task, sent on schedule whatever the earlier ones are
doing, so a slow path cannot slow its own arrivals. The paths take turns in short rounds, so
drift on the machine hits them alike. Overhead per percentile is (path - direct). loragate
runs as operators run it: API keys, conversation log, journal, metrics; retrieval off.

LiteLLM is installed in its own venv (``bench/.venv-litellm``, first run only) so its pins
cannot touch the project's. Prints the tables and writes them to docs/benchmarks.md.

    .venv/bin/python bench/overhead.py [--rps 50,200] [--seconds 30] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import (
    emit,
    free_port,
    machine_description,
    on_schedule,
    percentile,
    wait_idle,
    wait_ready,
)

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
MODEL = "SmolLM2-135M-Instruct"
LITELLM_VENV = REPO / "bench" / ".venv-litellm"
# Newer releases move the proxy into a `litellm-proxy` package that PyPI does not carry.
LITELLM_VERSION = "1.80.0"
SECTION = "## Gateway overhead: loragate vs LiteLLM vs direct"
PROMPT = [{"role": "user", "content": "Name three colours of the rainbow."}]
PATHS = ("direct", "loragate", "litellm")
GROUNDED = "loragate, retrieval on"
COLLECTION = "bench-docs"
DOCUMENTS = REPO / "trainer" / "demo" / "documents"
DEMO_DOCUMENTS = len(list(DOCUMENTS.glob("*.md")))
STREAM_LEVELS = (1, 8, 32)


@dataclass
class Samples:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Endpoint:
    name: str
    base_url: str  # up to and including /v1
    key: str
    extra_body: dict[str, object] = field(default_factory=dict)  # say, a retrieval option
    pid: int | None = None  # the gateway's process, to wait for it to go idle


# -- processes ----------------------------------------------------------------------------------


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, **(env or {})})  # fmt: skip


@contextmanager
def running(processes: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def litellm_binary() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet",
                        f"litellm[proxy]=={LITELLM_VERSION}"], check=True)  # fmt: skip
    return binary


def start_litellm(upstream_v1: str, work: Path) -> tuple[subprocess.Popen[bytes], Endpoint]:
    port = free_port()
    config = work / f"litellm-{port}.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{MODEL}\n"
        f"      api_base: {upstream_v1}\n"
        "      api_key: none\n"
        "general_settings:\n"
        "  master_key: sk-bench\n"
    )
    # Like loragate in this run, no access log line per request (LiteLLM logs one by default).
    log_config = work / "litellm-logging.json"
    log_config.write_text(json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "loggers": {"uvicorn.access": {"level": "WARNING"}, "uvicorn": {"level": "WARNING"}},
    }))  # fmt: skip
    process = spawn([str(litellm_binary()), "--config", str(config), "--port", str(port),
                     "--num_workers", "1", "--log_config", str(log_config)],
                    work / f"litellm-{port}.log",
                    {"LITELLM_LOG": "ERROR"})  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", process)
    return process, Endpoint("litellm", f"http://127.0.0.1:{port}/v1", "sk-bench",
                             pid=process.pid)  # fmt: skip


def start_loragate(
    work: Path,
    engine_url: str | None,
    *,
    scope: str = "chat",
    extra_env: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Endpoint, str]:
    """``loragate serve``: external mode on ``engine_url``, or embedded (its own vLLM)."""
    port, engine_port = free_port(), free_port()
    data_dir = data_dir or work / f"loragate-{port}"
    env = {"LORAGATE_DATA_DIR": str(data_dir), "LORAGATE_PORT": str(port),
           "LORAGATE_LOG_LEVEL": "WARNING", "LORAGATE_MONITOR_INTERVAL_S": "0",
           **(extra_env or {})}  # fmt: skip
    if engine_url is None:
        env |= {"LORAGATE_ENGINE_PORT": str(engine_port),
                "LORAGATE_BASE_MODEL_PATH": str(MODEL_DIR)}  # fmt: skip
        engine_url = f"http://127.0.0.1:{engine_port}"
    else:
        env |= {"LORAGATE_ENGINE_MODE": "external", "LORAGATE_ENGINE_URLS": engine_url}
    key = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "create", "--scope", scope],
        env={**os.environ, **env}, capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.split()[-1]  # fmt: skip
    process = spawn([sys.executable, "-m", "gateway.cli", "serve"], data_dir / "serve.log", env)
    wait_ready(f"http://127.0.0.1:{port}/readyz", process)
    endpoint = Endpoint("loragate", f"http://127.0.0.1:{port}/v1", key, pid=process.pid)
    return process, endpoint, engine_url


def grounded_endpoint(ours: Endpoint) -> Endpoint:
    """loragate again, every request grounded on a collection of the demo documents."""
    root = ours.base_url.removesuffix("/v1")
    for document in sorted(DOCUMENTS.glob("*.md")):
        response = httpx.post(
            f"{root}/v1/collections/{COLLECTION}/documents",
            json={"id": document.stem, "markdown": document.read_text(), "source": document.name},
            headers={"Authorization": f"Bearer {ours.key}"}, timeout=300,
        )  # fmt: skip
        response.raise_for_status()
    return Endpoint(GROUNDED, ours.base_url, ours.key, {"retrieval": {"collection": COLLECTION}},
                    ours.pid)  # fmt: skip


# -- load ---------------------------------------------------------------------------------------


async def one(client: httpx.AsyncClient, endpoint: Endpoint, max_tokens: int) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"{endpoint.base_url}/chat/completions",
        json={
            "model": MODEL,
            "messages": PROMPT,
            "max_tokens": max_tokens,
            "temperature": 0,
            **endpoint.extra_body,
        },
        headers={"Authorization": f"Bearer {endpoint.key}"},
    )
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    response.json()
    return (time.perf_counter() - started) * 1000


async def open_loop(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    rps: float,
    seconds: float,
    max_tokens: int,
    into: Samples,
) -> None:
    """``rps`` requests a second for ``seconds``, each sent on schedule."""
    began = time.perf_counter()
    for result in await on_schedule(rps, seconds, lambda: one(client, endpoint, max_tokens)):
        if isinstance(result, BaseException):
            into.errors.append(f"{type(result).__name__}: {result}"[:200])
        else:
            into.latencies_ms.append(result)
    into.seconds += time.perf_counter() - began


async def measure_async(endpoints: list[Endpoint], rps: float, seconds: float, rounds: int,
                        max_tokens: int) -> dict[str, Samples]:  # fmt: skip
    # One client per path for the whole run, as a real client keeps its pool: the warm-up
    # opens the connections, so the rounds measure requests, not TCP handshakes.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    clients = {endpoint.name: httpx.AsyncClient(timeout=120, limits=limits)
               for endpoint in endpoints}  # fmt: skip
    samples = {endpoint.name: Samples() for endpoint in endpoints}
    try:
        for endpoint in endpoints:
            await open_loop(clients[endpoint.name], endpoint, rps, 3, max_tokens, Samples())
        for round_number in range(rounds):
            for endpoint in endpoints:
                if settle(endpoints) > 4:  # the servers closed idle connections meanwhile
                    await open_loop(clients[endpoint.name], endpoint, rps, 1, max_tokens,
                                    Samples())  # fmt: skip
                await open_loop(clients[endpoint.name], endpoint, rps, seconds / rounds,
                                max_tokens, samples[endpoint.name])  # fmt: skip
            print(f"  round {round_number + 1}/{rounds} done", flush=True)
    finally:
        for client in clients.values():
            await client.aclose()
    return samples


def settle(endpoints: list[Endpoint]) -> float:
    """Wait until no gateway is still busy with the last round's backlog (a proxy that fell
    behind keeps working after its round ends, on the cores the next path is measured on)."""
    waited = 0.0
    for endpoint in endpoints:
        if endpoint.pid is not None:
            seconds = wait_idle(endpoint.pid, timeout_s=120)
            if seconds > 2.5:
                print(f"  waited {seconds:.1f} s for {endpoint.name} to go idle", flush=True)
            waited += seconds
    return waited


def measure(endpoints: list[Endpoint], rps: float, seconds: float, rounds: int,
            max_tokens: int) -> dict[str, Samples]:  # fmt: skip
    return asyncio.run(measure_async(endpoints, rps, seconds, rounds, max_tokens))


@dataclass
class Streams:
    ttft_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)  # between content chunks
    chunks: int = 0
    errors: int = 0
    seconds: float = 0.0


async def stream_one(client: httpx.AsyncClient, endpoint: Endpoint, into: Streams) -> None:
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 16, "temperature": 0,
            "stream": True}  # fmt: skip
    started = last = time.perf_counter()
    first, done = True, False
    async with client.stream(
        "POST",
        f"{endpoint.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {endpoint.key}"},
    ) as response:
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and '"content"' in line:
                now = time.perf_counter()
                if first:
                    into.ttft_ms.append((now - started) * 1000)
                    first = False
                else:
                    into.gaps_ms.append((now - last) * 1000)
                last = now
                into.chunks += 1
    if not done or response.status_code != 200:
        into.errors += 1


async def closed_loop(endpoint: Endpoint, concurrency: int, seconds: float, into: Streams) -> None:
    """``concurrency`` clients streaming back to back for ``seconds``."""
    deadline = time.perf_counter() + seconds
    began = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                try:
                    await stream_one(client, endpoint, into)
                except httpx.HTTPError:
                    into.errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    into.seconds += time.perf_counter() - began


def measure_streams(endpoints: list[Endpoint], levels: tuple[int, ...], seconds: float,
                    rounds: int) -> dict[tuple[str, int], Streams]:  # fmt: skip
    results = {(endpoint.name, level): Streams() for endpoint in endpoints for level in levels}
    for level in levels:
        for _ in range(rounds):
            for endpoint in endpoints:
                asyncio.run(closed_loop(endpoint, level, seconds / rounds,
                                        results[(endpoint.name, level)]))  # fmt: skip
        print(f"  {level} concurrent streams done", flush=True)
    return results


# -- report -------------------------------------------------------------------------------------


def table(
    title: str, samples: dict[str, Samples], rps: float, paths: tuple[str, ...] = PATHS
) -> list[str]:
    direct = samples["direct"].latencies_ms
    lines = [
        f"**{title}**, offered {rps:g} requests/s:", "",
        "| path | requests | errors | sustained req/s | p50 ms | p95 ms | p99 ms | "
        "overhead p50 | p95 | p99 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for name in paths:
        got = samples.get(name)
        if got is None or not got.latencies_ms:
            lines.append(f"| {name} | 0 | {len(got.errors) if got else '-'} | | | | | | | |")
            continue
        values = got.latencies_ms
        pcts = [percentile(values, q) for q in (0.5, 0.95, 0.99)]
        base = [percentile(direct, q) for q in (0.5, 0.95, 0.99)]
        overhead = [f"{p - b:.2f}" for p, b in zip(pcts, base, strict=True)]
        if name == "direct":
            overhead = ["-"] * 3
        lines.append(
            f"| {name} | {len(values) + len(got.errors)} | {len(got.errors)} | "
            f"{len(values) / got.seconds:.1f} | " + " | ".join(f"{p:.2f}" for p in pcts)
            + " | " + " | ".join(overhead) + " |"
        )  # fmt: skip
    return lines


def stream_table(title: str, results: dict[tuple[str, int], Streams],
                 levels: tuple[int, ...]) -> list[str]:  # fmt: skip
    lines = [
        f"**{title}**, streaming (max_tokens 16), closed loop:", "",
        "| streams | path | streams done | errors | chunks/s | TTFT p50 | p99 (ms) | "
        "gap p50 | p99 (ms) | TTFT added p50 | p99 | gap added p50 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for level in levels:
        direct = results[("direct", level)]
        for name in PATHS:
            got = results.get((name, level))
            if got is None or not got.ttft_ms:
                continue
            ttft = [percentile(got.ttft_ms, q) for q in (0.5, 0.99)]
            gaps = [percentile(got.gaps_ms or [0.0], q) for q in (0.5, 0.99)]
            if name == "direct":
                added = "- | - | -"
            else:
                base_ttft = [percentile(direct.ttft_ms, q) for q in (0.5, 0.99)]
                base_gap = percentile(direct.gaps_ms or [0.0], 0.5)
                added = (f"{ttft[0] - base_ttft[0]:.2f} | {ttft[1] - base_ttft[1]:.2f} | "
                         f"{gaps[0] - base_gap:.2f}")  # fmt: skip
            lines.append(
                f"| {level} | {name} | {len(got.ttft_ms)} | {got.errors} | "
                f"{got.chunks / got.seconds:.0f} | {ttft[0]:.2f} | {ttft[1]:.2f} | "
                f"{gaps[0]:.2f} | {gaps[1]:.2f} | {added} |"
            )
    return lines


def ratios(samples: dict[str, Samples]) -> str:
    direct = samples["direct"].latencies_ms
    parts = []
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        base = percentile(direct, q)
        ours = percentile(samples["loragate"].latencies_ms, q) - base
        theirs = percentile(samples["litellm"].latencies_ms, q) - base
        parts.append(
            f"{label} overhead loragate {ours:.2f} ms vs LiteLLM {theirs:.2f} ms "
            f"({theirs / ours:.1f}x)"
            if ours > 0
            else f"{label}: loragate ≤ direct"
        )
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rps",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[50.0, 200.0],
        help="offered loads on the stub, comma-separated",
    )
    parser.add_argument("--vllm-rps", type=float, default=3, help="offered load on vLLM")
    parser.add_argument("--grounded-rps", type=float, default=20,
                        help="offered load on the stub with retrieval on")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30, help="per path and upstream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-seconds", type=float, default=15,
                        help="per path, upstream and concurrency")  # fmt: skip
    parser.add_argument("--stub-only", action="store_true", help="skip the vLLM upstream")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loragate-bench-overhead-"))
    print(f"logs in {work}", flush=True)

    stub_port = free_port()
    stub = spawn([sys.executable, "bench/stub_upstream.py", "--port", str(stub_port)],
                 work / "stub.log")  # fmt: skip
    stub_url = f"http://127.0.0.1:{stub_port}"
    wait_ready(f"{stub_url}/health", stub)
    ours, ours_endpoint, _ = start_loragate(work, stub_url, scope="admin")
    theirs, theirs_endpoint = start_litellm(f"{stub_url}/v1", work)
    with running([stub, ours, theirs]):
        endpoints = [Endpoint("direct", f"{stub_url}/v1", "none"), ours_endpoint, theirs_endpoint]
        on_stub = {}
        for rps in args.rps:
            print(f"stub upstream at {rps:g} req/s ...", flush=True)
            on_stub[rps] = measure(endpoints, rps, args.seconds, args.rounds, max_tokens=8)
        print(f"stub upstream, retrieval on, at {args.grounded_rps:g} req/s ...", flush=True)
        grounded = grounded_endpoint(ours_endpoint)
        on_stub_grounded = measure([endpoints[0], grounded], args.grounded_rps, args.seconds,
                                   args.rounds, max_tokens=8)  # fmt: skip
        print("stub upstream, streams ...", flush=True)
        streams_stub = measure_streams(endpoints, STREAM_LEVELS, args.stream_seconds,
                                       args.rounds)  # fmt: skip

    if args.stub_only:
        for rps, samples in on_stub.items():
            print("\n".join(table("Stub upstream", samples, rps)), "\n", ratios(samples))
        print("\n".join(table("retrieval on", on_stub_grounded, args.grounded_rps,
                               ("direct", GROUNDED))))  # fmt: skip
        print("\n".join(stream_table("Stub upstream", streams_stub, STREAM_LEVELS)))
        return
    embedded, embedded_endpoint, engine_url = start_loragate(work, None)
    theirs, theirs_endpoint = start_litellm(f"{engine_url}/v1", work)
    with running([embedded, theirs]):
        endpoints = [Endpoint("direct", f"{engine_url}/v1", "none"), embedded_endpoint,
                     theirs_endpoint]  # fmt: skip
        print("vLLM upstream ...", flush=True)
        on_vllm = measure(endpoints, args.vllm_rps, args.seconds, args.rounds, max_tokens=8)
        print("vLLM upstream, streams ...", flush=True)
        streams_vllm = measure_streams(endpoints, STREAM_LEVELS, args.stream_seconds,
                                       args.rounds)  # fmt: skip

    lines = [
        SECTION, "",
        f"`bench/overhead.py` on {machine_description()}, {datetime.now(UTC):%Y-%m-%d}: "
        f"non-streaming chats (max_tokens 8), open loop, {args.seconds:g} s per path in "
        f"{args.rounds} alternating rounds; loragate with API keys, conversation log, journal "
        f"and metrics, retrieval off; LiteLLM {LITELLM_VERSION} proxy, one worker, master key. "
        "Client, gateways and upstream share the machine's two cores.", "",
        *[line for rps, samples in on_stub.items()
          for line in (*table("Stub upstream", samples, rps), "",
                       f"At {rps:g} req/s: {ratios(samples)}.", "")],
        *table("Stub upstream, retrieval on", on_stub_grounded, args.grounded_rps,
               ("direct", GROUNDED)), "",
        f"Retrieval on: every request grounded on `{COLLECTION}` (the {DEMO_DOCUMENTS} demo "
        "documents): the query embedded with all-MiniLM-L6-v2 on one torch thread, the FAISS "
        "search, the chunk rows read, the sources put in the prompt. LiteLLM has no "
        "retrieval to compare.", "",
        *table("vLLM CPU upstream", on_vllm, args.vllm_rps), "",
        *stream_table("Stub upstream", streams_stub, STREAM_LEVELS), "",
        *stream_table("vLLM CPU upstream", streams_vllm, STREAM_LEVELS), "",
    ]  # fmt: skip
    section = "\n".join(lines)
    emit(SECTION, section, write=not args.no_write)


if __name__ == "__main__":
    main()
