"""The gateway's cost curve: its own CPU time per request and its memory as the load grows.

Three curves, each on a fresh ``loragate serve`` in front of the fast stub upstream
(bench/stub_upstream.py), so every CPU second counted is the gateway's own:

* concurrency: 1, 4, 16 and 64 streams at once, base model, retrieval off;
* adapters: 1, 4, 16 and 32 aliases, each with a published version (real PEFT files, checked
  and registered by the gateway, loaded into the stub as vLLM would be asked to), 16 streams
  spread round-robin over the aliases;
* retrieval: collections and vectors (1 x 1k, 1 x 10k, 1 x 100k, 4 x 10k, 16 x 10k), 4
  grounded streams spread over the collections. The chunks are synthetic (random unit
  vectors and short texts, written into the store before the gateway starts), because
  embedding 100k real chunks takes hours on this CPU; the gateway builds its FAISS indexes
  from the store as it always does, and each query is embedded for real.

CPU per request is the gateway process's user + system time over the cell divided by the
requests it served; memory is its resident set (RSS) before and at the peak of the cell.
Side by side: the same streams sent straight to the stub, and the stub's own CPU per request,
for scale. Prints the table and writes it to docs/benchmarks.md.

    .venv/bin/python bench/cost.py [--seconds 8] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.overhead import MODEL, MODEL_DIR, Endpoint, running, spawn, start_loragate
from bench.report import (
    cpu_seconds,
    emit,
    free_port,
    machine_description,
    percentile,
    wait_idle,
    wait_ready,
)

SECTION = "## Cost curve"
PROMPT = [{"role": "user", "content": "How do I return a purple teapot?"}]
CONCURRENCY = (1, 4, 16, 64)
ADAPTERS = (1, 4, 16, 32)
# (collections, vectors in each)
COLLECTIONS = ((1, 1_000), (1, 10_000), (1, 100_000), (4, 10_000), (16, 10_000))


# -- one process's CPU and memory ---------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Cell:
    label: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    gateway_cpu_s: float = 0.0
    stub_cpu_s: float = 0.0
    rss_before: float = 0.0
    rss_peak: float = 0.0
    direct_requests: int = 0
    direct_stub_cpu_s: float = 0.0

    def per_request_ms(self, cpu_s: float, requests: int) -> str:
        return f"{1000 * cpu_s / requests:.2f}" if requests else "-"


@contextmanager
def peak_rss(pid: int, cell: Cell) -> Iterator[None]:
    cell.rss_before = cell.rss_peak = rss_mib(pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            cell.rss_peak = max(cell.rss_peak, rss_mib(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        cell.rss_peak = max(cell.rss_peak, rss_mib(pid))


# -- load -----------------------------------------------------------------------------------------


async def stream_once(client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]) -> bool:
    async with client.stream("POST", url, json=body,
                             headers={"Authorization": f"Bearer {key}"}) as response:  # fmt: skip
        done = False
        async for line in response.aiter_lines():
            done = done or line == "data: [DONE]"
    return response.status_code == 200 and done


async def closed_loop(
    endpoint: Endpoint,
    streams: int,
    seconds: float,
    bodies: Callable[[int], dict[str, Any]],
    cell: Cell | None,
) -> tuple[int, int]:
    """``streams`` clients streaming back to back; request ``n`` sends ``bodies(n)``."""
    url = f"{endpoint.base_url}/chat/completions"
    counter = iter(range(10**9))
    ok = failed = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal ok, failed
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    good = await stream_once(client, url, endpoint.key, bodies(next(counter)))
                except httpx.HTTPError:
                    good = False
                ok, failed = ok + good, failed + (not good)
                if cell is not None and good:
                    cell.latencies_ms.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(streams)))
    return ok, failed


async def send_each(endpoint: Endpoint, bodies: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(timeout=600) as client:
        for body in bodies:
            if not await stream_once(client, f"{endpoint.base_url}/chat/completions",
                                     endpoint.key, body):  # fmt: skip
                raise SystemExit(f"warm-up request failed: {body}")


def measure(
    cell: Cell,
    gateway: Endpoint,
    direct: Endpoint | None,
    pids: tuple[int, int],
    streams: int,
    seconds: float,
    bodies: Callable[[int], dict[str, Any]],
) -> Cell:
    gateway_pid, stub_pid = pids
    asyncio.run(closed_loop(gateway, streams, 2, bodies, None))  # warm: connections, indexes
    with peak_rss(gateway_pid, cell):
        cpu, stub_cpu, began = cpu_seconds(gateway_pid), cpu_seconds(stub_pid), time.perf_counter()
        cell.requests, cell.errors = asyncio.run(
            closed_loop(gateway, streams, seconds, bodies, cell)
        )
        cell.seconds = time.perf_counter() - began
        cell.gateway_cpu_s = cpu_seconds(gateway_pid) - cpu
        cell.stub_cpu_s = cpu_seconds(stub_pid) - stub_cpu
    if direct is not None:
        stub_cpu = cpu_seconds(stub_pid)
        cell.direct_requests, _ = asyncio.run(closed_loop(direct, streams, seconds, bodies, None))
        cell.direct_stub_cpu_s = cpu_seconds(stub_pid) - stub_cpu
    print(f"  {cell.label}: {cell.requests} requests, "
          f"{cell.per_request_ms(cell.gateway_cpu_s, cell.requests)} ms CPU each, "
          f"RSS {cell.rss_before:.0f} → {cell.rss_peak:.0f} MiB", flush=True)  # fmt: skip
    return cell


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, "max_tokens": 16, "stream": True, **extra}


# -- the three curves -----------------------------------------------------------------------------


@contextmanager
def gateway_on_stub(
    work: Path, name: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Endpoint, Endpoint, tuple[int, int], Path]]:
    stub_port = free_port()
    stub = spawn([sys.executable, "bench/stub_upstream.py", "--port", str(stub_port)],
                 work / f"stub-{name}.log")  # fmt: skip
    stub_url = f"http://127.0.0.1:{stub_port}"
    wait_ready(f"{stub_url}/health", stub)
    data_dir = work / name
    env = {"LORAGATE_BASE_MODEL_PATH": str(MODEL_DIR), **(extra_env or {})}
    process, endpoint, _ = start_loragate(work, stub_url, scope="admin", extra_env=env,
                                          data_dir=data_dir)  # fmt: skip
    with running([process, stub]):
        wait_idle(process.pid)
        yield (
            endpoint,
            Endpoint("direct", f"{stub_url}/v1", "none"),
            (process.pid, stub.pid),
            data_dir,
        )


def concurrency_curve(work: Path, seconds: float) -> list[Cell]:
    with gateway_on_stub(work, "concurrency") as (gateway, direct, pids, _):
        return [measure(Cell(f"{streams} streams"), gateway, direct, pids, streams, seconds,
                        lambda n: chat(MODEL)) for streams in CONCURRENCY]  # fmt: skip


def make_adapters(root: Path, count: int) -> list[Path]:
    """One real PEFT LoRA on the base model, then copies with their weights nudged, so every
    version has its own content (and hash) without loading the model ``count`` times."""
    from safetensors.numpy import load_file, save_file

    from trainer.sample import sample_adapter

    first = sample_adapter(root / "lora-0", MODEL_DIR, seed=0, rank=8)
    weights_file = "adapter_model.safetensors"
    weights = load_file(first / weights_file)
    paths = [first]
    rng = np.random.default_rng(0)
    for number in range(1, count):
        target = root / f"lora-{number}"
        shutil.copytree(first, target)
        nudged = {name: (tensor + rng.normal(0, 1e-3, tensor.shape)).astype(tensor.dtype)
                  for name, tensor in weights.items()}  # fmt: skip
        save_file(nudged, target / weights_file)
        paths.append(target)
    return paths


def publish(gateway: Endpoint, path: Path, alias: str) -> str:
    root = gateway.base_url.removesuffix("/v1")
    response = httpx.post(
        f"{root}/v1/admin/adapters", json={"path": str(path), "alias": alias},
        headers={"Authorization": f"Bearer {gateway.key}"}, timeout=120,
    )  # fmt: skip
    if response.status_code >= 400:
        raise SystemExit(f"publish {alias}: {response.status_code} {response.text[:300]}")
    return str(response.json()["name"])


def adapter_curve(work: Path, seconds: float) -> list[Cell]:
    print("  making adapters ...", flush=True)
    paths = make_adapters(work / "loras", max(ADAPTERS))
    cells = []
    with gateway_on_stub(work, "adapters", {"LORAGATE_MAX_LORAS": str(max(ADAPTERS)),
                                            "LORAGATE_MAX_CPU_LORAS": str(max(ADAPTERS))}) as (
        gateway, direct, pids, _,
    ):  # fmt: skip
        aliases: list[str] = []
        for count in ADAPTERS:
            while len(aliases) < count:
                alias = f"cost{len(aliases)}"
                publish(gateway, paths[len(aliases)], alias)
                aliases.append(alias)
            names = list(aliases)
            cells.append(measure(Cell(f"{count} adapters"), gateway, direct, pids, 16, seconds,
                                 lambda n, names=names: chat(names[n % len(names)])))  # fmt: skip
    return cells


def fill_store(database: Path, collections: int, vectors: int, dimension: int = 384) -> None:
    """Synthetic documents of 100 chunks each, straight into the store's tables."""
    rng = np.random.default_rng(collections * 1_000_003 + vectors)
    now = datetime.now(UTC).isoformat(sep=" ")
    with sqlite3.connect(database) as db:
        for number in range(collections):
            name = f"cost{number}"
            present = db.execute("SELECT count(*) FROM chunks WHERE collection = ?",
                                 (name,)).fetchone()[0]  # fmt: skip
            db.execute("INSERT OR IGNORE INTO collections (name, generation, created_at) "
                       "VALUES (?, 0, ?)", (name, now))  # fmt: skip
            for start in range(present, vectors, 100):
                document = f"doc-{start // 100}"
                db.execute(
                    "INSERT INTO documents (collection, id, source, content_hash, metadata, "
                    "chunk_count, updated_at) VALUES (?, ?, ?, ?, '{}', 100, ?)",
                    (name, document, f"synthetic/{document}.md",
                     hashlib.sha256(f"{name}/{document}".encode()).hexdigest(), now),
                )  # fmt: skip
                block = rng.standard_normal((100, dimension)).astype(np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                db.executemany(
                    "INSERT INTO chunks (collection, document_id, ordinal, section, text, vector)"
                    " VALUES (?, ?, ?, '', ?, ?)",
                    [(name, document, ordinal,
                      f"Synthetic passage {start + ordinal} of {name}: purple teapots, returns, "
                      "warranty terms and the opening hours of the shop.", vector.tobytes())
                     for ordinal, vector in enumerate(block)],
                )  # fmt: skip
            db.execute("UPDATE collections SET generation = generation + 1 WHERE name = ?",
                       (name,))  # fmt: skip


def migrate(data_dir: Path) -> Path:
    from core.store import Database

    database = data_dir / "loragate.db"
    store = Database(f"sqlite+aiosqlite:///{database}")

    async def run() -> None:
        await store.migrate()
        await store.engine.dispose()

    asyncio.run(run())
    return database


def retrieval_curve(work: Path, seconds: float) -> list[Cell]:
    data_dir = work / "retrieval"
    database = migrate(data_dir)
    cells = []
    for collections, vectors in COLLECTIONS:
        print(f"  filling {collections} x {vectors} ...", flush=True)
        fill_store(database, collections, vectors)
        with gateway_on_stub(work, "retrieval") as (gateway, _, pids, _):
            names = [f"cost{number}" for number in range(collections)]

            def grounded(n: int, names: list[str] = names) -> dict[str, Any]:
                return chat(MODEL, retrieval={"collection": names[n % len(names)],
                                              "min_score": -1.0})  # fmt: skip

            # Every collection's index is loaded before the clock starts.
            asyncio.run(send_each(gateway, [grounded(n) for n in range(len(names))]))
            label = f"{collections} x {vectors // 1000}k vectors"
            cells.append(measure(Cell(label), gateway, None, pids, 4, seconds, grounded))
    return cells


# -- report ---------------------------------------------------------------------------------------


def table(title: str, note: str, cells: list[Cell], direct: bool) -> list[str]:
    head = ("| load | requests | errors | gateway CPU ms/request | stub CPU ms/request "
            "(via gateway) | stub CPU ms/request (direct) | latency p50 | p99 (ms) | "
            "RSS before (MiB) | RSS peak (MiB) |")  # fmt: skip
    lines = [f"**{title}** ({note})", "", head, "| --- |" + " ---: |" * 9]
    for cell in cells:
        latencies = cell.latencies_ms or [0.0]
        direct_stub = (cell.per_request_ms(cell.direct_stub_cpu_s, cell.direct_requests)
                       if direct else "-")  # fmt: skip
        lines.append(
            f"| {cell.label} | {cell.requests} | {cell.errors} | "
            f"{cell.per_request_ms(cell.gateway_cpu_s, cell.requests)} | "
            f"{cell.per_request_ms(cell.stub_cpu_s, cell.requests)} | {direct_stub} | "
            f"{percentile(latencies, 0.5):.1f} | {percentile(latencies, 0.99):.1f} | "
            f"{cell.rss_before:.0f} | {cell.rss_peak:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8, help="per cell")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loragate-bench-cost-"))
    print(f"logs in {work}\nconcurrency ...", flush=True)
    by_concurrency = concurrency_curve(work, args.seconds)
    print("adapters ...", flush=True)
    by_adapters = adapter_curve(work, args.seconds)
    by_retrieval = [] if args.skip_retrieval else retrieval_curve(work, args.seconds)
    lines = [
        SECTION, "",
        f"`bench/cost.py` on {machine_description()}, {datetime.now(UTC):%Y-%m-%d}: "
        f"{args.seconds:g} s per cell of closed-loop streaming chats (max_tokens 16, 8 chunks) "
        "through `loragate serve` (API key, conversation log, journal, metrics) in front of "
        "the stub upstream; CPU is the gateway process's user + system time per request "
        "served, RSS its resident memory before the cell and at its peak. The stub's CPU per "
        "request, through the gateway and sent to it directly, is the scale: what the "
        "cheapest possible server spends on the same stream.", "",
        *table("Concurrency", "base model, retrieval off", by_concurrency, True), "",
        *table("Adapters", "one published version per alias, 16 streams round-robin",
               by_adapters, True), "",
    ]  # fmt: skip
    if by_retrieval:
        lines += [
            *table("Collections and vectors", "4 grounded streams, round-robin over the "
                   "collections; synthetic chunks, real query embedding and FAISS search",
                   by_retrieval, False), "",
        ]  # fmt: skip
    emit(SECTION, "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
