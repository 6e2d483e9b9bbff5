"""Grounded requests, torch vs the fast (int8 ONNX) query embedder, side by side in one run.

Two ``loragate serve`` processes in front of the stub upstream (bench/stub_upstream.py), one
per ``embedding_backend``, each grounding on the demo documents. For each:

1. overhead: plain chats and grounded chats at ``--rps``, open loop, in alternating rounds;
   grounding's overhead is grounded minus plain at p50 and p99, and its CPU is the gateway
   process's CPU seconds per grounded request minus per plain one (``/proc/PID/stat``);
2. interference: plain chats at ``--rps`` alone, then beside grounded load at
   ``--load-rps``: the plain p50/p99 a burst of grounded requests leaves.

Every grounded question is new (a counter in it), so the query-vector cache never answers:
this measures the embedder. The low-groundedness flag rule is off: the stub's fixed answer
uses none of the sources, so every grounded answer would be flagged for review (a review
item written per request, some 5 ms of gateway CPU here), which an answer that uses its
sources does not cost; the groundedness score itself is still computed. Prints the tables
and writes them to docs/benchmarks.md.

    .venv/bin/python bench/grounding.py [--rps 20] [--load-rps 40] [--seconds 20] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.overhead import (
    COLLECTION,
    DEMO_DOCUMENTS,
    MODEL,
    Endpoint,
    grounded_endpoint,
    running,
    spawn,
    start_loragate,
)
from bench.report import (
    cpu_seconds,
    emit,
    free_port,
    machine_description,
    on_schedule,
    percentile,
    wait_idle,
    wait_ready,
)

SECTION = "## Grounding overhead: torch vs fast embedder"
BACKENDS = ("torch", "onnx")
QUESTION = "What does the {} policy say about refunds for order {}?"
TOPICS = ("returns", "shipping", "warranty", "holiday", "billing", "account")
_numbers = itertools.count()


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float = 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99) if self.latencies_ms else float("nan")

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s * 1000 / max(1, len(self.latencies_ms))


async def one(client: httpx.AsyncClient, endpoint: Endpoint, into: Run) -> None:
    number = next(_numbers)
    body = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": QUESTION.format(TOPICS[number % len(TOPICS)], number)}
        ],
        "max_tokens": 8,
        "temperature": 0,
        **endpoint.extra_body,
    }
    started = time.perf_counter()
    try:
        response = await client.post(
            f"{endpoint.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {endpoint.key}"},
        )
        response.raise_for_status()
    except httpx.HTTPError:
        into.errors += 1
        return
    into.latencies_ms.append((time.perf_counter() - started) * 1000)


async def open_loop(
    client: httpx.AsyncClient, endpoint: Endpoint, rps: float, seconds: float, into: Run
) -> None:
    """``rps`` requests a second for ``seconds``, each sent on schedule."""
    for failed in await on_schedule(rps, seconds, lambda: one(client, endpoint, into)):
        if failed is not None:
            raise failed  # ``one`` counts HTTP errors itself; anything else is a bug


async def timed(
    client: httpx.AsyncClient, endpoint: Endpoint, rps: float, seconds: float, into: Run
) -> None:
    """An open loop whose gateway CPU is charged to ``into`` (the backlog included)."""
    assert endpoint.pid is not None
    wait_idle(endpoint.pid, timeout_s=120)
    before = cpu_seconds(endpoint.pid)
    await open_loop(client, endpoint, rps, seconds, into)
    wait_idle(endpoint.pid, timeout_s=120)
    into.cpu_s += cpu_seconds(endpoint.pid) - before


async def overhead(
    pairs: dict[str, tuple[Endpoint, Endpoint]], args: argparse.Namespace
) -> dict[str, tuple[Run, Run]]:
    runs = {backend: (Run(), Run()) for backend in pairs}
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for plain, grounded in pairs.values():  # warm-up: connections, model, first batch
            await open_loop(client, plain, args.rps, 2, Run())
            await open_loop(client, grounded, args.rps, 2, Run())
        for round_number in range(args.rounds):
            for backend, (plain, grounded) in pairs.items():
                seconds = args.seconds / args.rounds
                await timed(client, plain, args.rps, seconds, runs[backend][0])
                await timed(client, grounded, args.rps, seconds, runs[backend][1])
            print(f"  round {round_number + 1}/{args.rounds} done", flush=True)
    return runs


async def interference(
    pairs: dict[str, tuple[Endpoint, Endpoint]], args: argparse.Namespace
) -> dict[str, tuple[Run, Run, Run]]:
    """Per backend: plain alone, plain beside grounded load, and that grounded load. Each
    load has its own client: sharing one connection pool, plain requests would queue in
    the client behind a grounded backlog and measure the client."""
    runs = {}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with (
        httpx.AsyncClient(timeout=120, limits=limits) as plain_client,
        httpx.AsyncClient(timeout=120, limits=limits) as grounded_client,
    ):
        for backend, (plain, grounded) in pairs.items():
            alone, beside, load = Run(), Run(), Run()
            assert plain.pid is not None
            wait_idle(plain.pid, timeout_s=120)
            await open_loop(plain_client, plain, args.rps, args.seconds, alone)
            wait_idle(plain.pid, timeout_s=120)
            await asyncio.gather(
                open_loop(plain_client, plain, args.rps, args.seconds, beside),
                open_loop(grounded_client, grounded, args.load_rps, args.seconds, load),
            )
            runs[backend] = (alone, beside, load)
            print(f"  {backend}: interference done", flush=True)
    return runs


def overhead_table(runs: dict[str, tuple[Run, Run]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"### Grounding overhead at {args.rps:g} req/s (stub upstream)",
        "",
        "| embedder | plain p50 ms | plain p99 ms | grounded p50 ms | grounded p99 ms | "
        "overhead p50 ms | overhead p99 ms | gateway CPU ms/request, plain | grounded | "
        "grounding CPU ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, (plain, grounded) in runs.items():
        lines.append(
            f"| {backend} | {plain.p50:.2f} | {plain.p99:.2f} | {grounded.p50:.2f} | "
            f"{grounded.p99:.2f} | {grounded.p50 - plain.p50:.2f} | "
            f"{grounded.p99 - plain.p99:.2f} | {plain.cpu_ms_per_request:.2f} | "
            f"{grounded.cpu_ms_per_request:.2f} | "
            f"{grounded.cpu_ms_per_request - plain.cpu_ms_per_request:.2f} | "
            f"{plain.errors + grounded.errors} |"
        )
    return lines


def interference_table(
    runs: dict[str, tuple[Run, Run, Run]], args: argparse.Namespace
) -> list[str]:
    lines = [
        f"### Plain chats at {args.rps:g} req/s beside grounded load at {args.load_rps:g} req/s",
        "",
        "| embedder | plain p50 ms alone | plain p99 ms alone | plain p50 ms beside | "
        "plain p99 ms beside | p99 ratio | grounded p50 ms | grounded p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, (alone, beside, load) in runs.items():
        lines.append(
            f"| {backend} | {alone.p50:.2f} | {alone.p99:.2f} | {beside.p50:.2f} | "
            f"{beside.p99:.2f} | {beside.p99 / alone.p99:.2f} | {load.p50:.2f} | "
            f"{load.p99:.2f} | {alone.errors + beside.errors + load.errors} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=20, help="plain and grounded load")
    parser.add_argument("--load-rps", type=float, default=40, help="grounded load beside plain")
    parser.add_argument("--seconds", type=float, default=30, help="per path and backend")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loragate-bench-grounding-"))
    print(f"logs in {work}", flush=True)

    stub_port = free_port()
    stub = spawn(
        [sys.executable, "bench/stub_upstream.py", "--port", str(stub_port)], work / "stub.log"
    )
    stub_url = f"http://127.0.0.1:{stub_port}"
    wait_ready(f"{stub_url}/health", stub)
    processes, pairs = [stub], {}
    for backend in BACKENDS:
        process, endpoint, _ = start_loragate(
            work, stub_url, scope="admin", extra_env={
                "LORAGATE_EMBEDDING_BACKEND": backend,
                "LORAGATE_FLAG_RULES": '{"groundedness_below": null}',
            },
        )  # fmt: skip
        processes.append(process)
        grounded = grounded_endpoint(endpoint)
        pairs[backend] = (endpoint, grounded)
    with running(processes):
        print(f"overhead at {args.rps:g} req/s ...", flush=True)
        costs = asyncio.run(overhead(pairs, args))
        print(f"plain beside grounded at {args.load_rps:g} req/s ...", flush=True)
        beside = asyncio.run(interference(pairs, args))

    lines = [
        SECTION,
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine_description()} · "
        "`python bench/grounding.py`",
        "",
        *overhead_table(costs, args),
        "",
        *interference_table(beside, args),
        "",
        f"Two `loragate serve` processes (API keys, conversation log, journal, metrics), one "
        f"per `embedding_backend`, in front of the stub upstream; grounded requests retrieve "
        f"from `{COLLECTION}` (the {DEMO_DOCUMENTS} demo documents): embed the question, FAISS "
        "search, chunk rows read, sources in the prompt. Every question is new, so the query "
        "cache never answers. The low-groundedness flag rule is off (the stub's fixed answer "
        "would put every grounded answer in the review queue). Overhead: grounded minus "
        f"plain on the same gateway, open loop, {args.seconds:g} s per path in "
        f"{args.rounds} alternating rounds. CPU: the gateway process's user+system "
        "seconds over a loop and its backlog, per request. Client, "
        "gateways and stub share the machine's cores; on a busy machine treat the figures "
        "as upper bounds.",
        "",
    ]
    emit(SECTION, "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
