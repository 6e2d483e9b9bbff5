"""Load: concurrent chat streams on the real vLLM for a bounded time, half of them grounded,
while a new adapter version is hot-swapped in and its rollout steps.

Starts ``loragate serve`` (gateway + supervised vLLM CPU server) with an alias ``load`` on a
small real PEFT LoRA and a collection of the demo documents, then runs ``--streams`` threads
that stream chats back to back for ``--seconds``. A third of the way in, a second version is
published (the reconciler loads it into vLLM) and rolled out in steps; the controller steps
or rolls it back on its gates, and the run promotes it by hand at two thirds if it has not.

Reports, per kind of request (retrieval off / on): requests, errors (target 0), TTFT and
total latency percentiles; and the gateway process's RSS and open file descriptors sampled
every second after warm-up (target: flat). Writes the tables to docs/benchmarks.md
(``--no-write`` skips that). Nothing here asserts on time.

    .venv/bin/python bench/load.py [--streams 16] [--seconds 180] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.adapters import (
    MODEL_DIR,
    Server,
    admin,
    make_loras,
    publish,
    read_stream,
    start_server,
    stop_server,
)
from bench.report import emit, machine_description, percentile, wait_ready

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = REPO / "trainer" / "demo" / "documents"
ALIAS, COLLECTION = "load", "handbook"
SECTION = "## Load"
QUESTIONS = [
    "How long is the warranty on a Quillfeather bike?",
    "Can I return a bike I rode once?",
    "Where is the company based?",
    "How often should the chain be serviced?",
]


@dataclass
class Result:
    started: float
    grounded: bool
    ttft_s: float | None
    total_s: float
    version: str | None
    failure: str | None


@dataclass
class Sample:
    at: float
    rss_mib: float
    fds: int


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    began: float = field(default_factory=time.perf_counter)

    def note(self, what: str) -> None:
        at = time.perf_counter() - self.began
        print(f"  {at:6.1f} s  {what}", flush=True)
        with self.lock:
            self.events.append((at, what))


def stream_chat(client: httpx.Client, url: str, number: int, grounded: bool) -> Result:
    body = {"model": ALIAS, "max_tokens": 24, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}],
            "retrieval": {"collection": COLLECTION} if grounded else False}  # fmt: skip
    started = time.perf_counter()
    read = read_stream(client, url, body)
    elapsed = time.perf_counter() - started
    return Result(started, grounded, read.ttft_s, elapsed, read.version, read.failure)


def chatter(run: Run, url: str, worker: int) -> None:
    number = worker
    with httpx.Client(timeout=300) as client:
        while not run.stop.is_set():
            result = stream_chat(client, url, number, grounded=number % 2 == 1)
            number += 1
            with run.lock:
                run.results.append(result)


def sampler(run: Run, pid: int) -> None:
    while not run.stop.wait(1.0):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss_kib = next(int(line.split()[1]) for line in status.splitlines()
                           if line.startswith("VmRSS:"))  # fmt: skip
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            continue
        with run.lock:
            run.samples.append(Sample(time.perf_counter() - run.began, rss_kib / 1024, fds))


# -- the admin side: hot swap and a rollout step ------------------------------------------------


def prepare(client: httpx.Client, server: Server, lora: Path) -> str:
    version = publish(client, server, lora, ALIAS)
    for document in sorted(DOCUMENTS.glob("*.md")):
        admin(
            client,
            server,
            f"/v1/collections/{COLLECTION}/documents",
            {"id": document.stem, "markdown": document.read_text(), "source": document.name},
        )
    return version


def swap_and_step(
    client: httpx.Client, server: Server, run: Run, lora: Path, seconds: float
) -> None:
    run.stop.wait(seconds / 3)
    new = publish(client, server, lora, ALIAS)
    run.note(f"published {new}")
    admin(client, server, "/v1/admin/rollouts", {"alias": ALIAS, "version": new,
                                                 "steps": [25, 100]})  # fmt: skip
    run.note(f"rollout of {new} started at 25%")
    last = ""
    deadline = run.began + 2 * seconds / 3
    while not run.stop.wait(1.0):
        card = client.get(f"{server.gateway}/v1/admin/rollouts/{ALIAS}").json()
        state = (f"{card['state']} at {100 * card['weight']:.0f}%, "
                 f"{card['failures']} failed gate checks")  # fmt: skip
        if state != last:
            run.note(f"rollout {state}")
            last = state
        if card["state"] != "running":
            return
        if time.perf_counter() > deadline:
            admin(client, server, f"/v1/admin/rollouts/{ALIAS}/promote")
            run.note("promoted by hand")
            return


# -- report -------------------------------------------------------------------------------------


def latency_row(label: str, results: list[Result], seconds: float) -> str:
    ok = [result for result in results if result.failure is None]
    failures = len(results) - len(ok)
    ttfts = [result.ttft_s * 1000 for result in ok if result.ttft_s is not None]
    totals = [result.total_s * 1000 for result in ok]

    def pcts(values: list[float]) -> str:
        if not values:
            return "- | - | -"
        return " | ".join(f"{percentile(values, q):.0f}" for q in (0.5, 0.95, 0.99))

    return (f"| {label} | {len(results)} | {failures} | {len(results) / seconds:.2f} | "
            f"{pcts(ttfts)} | {pcts(totals)} |")  # fmt: skip


def resource_rows(samples: list[Sample], warm_up_s: float) -> list[str]:
    steady = [sample for sample in samples if sample.at >= warm_up_s]
    if len(steady) < 4:
        return ["| (too few samples) | | | | |"]
    fifth = max(1, len(steady) // 5)
    rows = []
    for name, values in (("RSS (MiB)", [sample.rss_mib for sample in steady]),
                         ("open fds", [float(sample.fds) for sample in steady])):  # fmt: skip
        first = statistics.median(values[:fifth])
        last = statistics.median(values[-fifth:])
        rows.append(f"| {name} | {first:.1f} | {last:.1f} | {max(values):.1f} | "
                    f"{last - first:+.1f} |")  # fmt: skip
    return rows


def report(run: Run, args: argparse.Namespace, elapsed: float, others: list[str]) -> str:
    results = run.results
    failures = [result.failure for result in results if result.failure]
    versions = sorted({result.version or "-" for result in results})
    lines = [
        SECTION, "",
        f"`bench/load.py` on {machine_description()}, {datetime.now(UTC):%Y-%m-%d}: "
        f"{args.streams} concurrent streams for {args.seconds:.0f} s against the embedded vLLM "
        f"CPU server (SmolLM2-135M, max_tokens 24), every other request grounded on the demo "
        f"documents; a new adapter version published and rolled out [25, 100] a third of the "
        f"way in. Versions that answered: {', '.join(versions)}."
        + (f" Also running: {', '.join(others)}." if others else ""), "",
        "| requests | count | errors | req/s | TTFT p50 | p95 | p99 (ms) | total p50 | p95 | "
        "p99 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        latency_row("retrieval off", [r for r in results if not r.grounded], elapsed),
        latency_row("retrieval on", [r for r in results if r.grounded], elapsed),
        latency_row("all", results, elapsed),
        "",
        f"Gateway process, sampled every second after {args.warm_up:.0f} s of warm-up "
        "(median of the first and of the last fifth):", "",
        "| resource | start | end | max | change |",
        "| --- | --- | --- | --- | --- |",
        *resource_rows(run.samples, args.warm_up),
        "",
        "Admin events: " + "; ".join(f"{at:.0f} s {what}" for at, what in run.events) + ".",
    ]  # fmt: skip
    if failures:
        lines += ["", "Errors: " + "; ".join(sorted(set(failures))[:5])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--warm-up", type=float, default=20, help="seconds before sampling counts")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    if not (MODEL_DIR / "config.json").exists():
        raise SystemExit("run `loragate model prepare` first")
    from bench.adapters import other_workloads

    others = other_workloads()
    data_dir = Path(tempfile.mkdtemp(prefix="loragate-bench-load-"))
    loras = make_loras(data_dir / "loras", 2, rank=8)
    server = start_server(data_dir, {"LORAGATE_ROLLOUT_INTERVAL_S": str(max(10, args.seconds / 9)),
                                     "LORAGATE_ROLLOUT_MIN_SAMPLES": "5"})  # fmt: skip
    print(f"loragate serve: {server.gateway}, log {server.log}", flush=True)
    try:
        wait_ready(f"{server.gateway}/readyz", server.process)
        with httpx.Client(timeout=600) as client:
            print(f"alias {ALIAS} on {prepare(client, server, loras[0])}", flush=True)
            run = Run()
            threads = [threading.Thread(target=chatter, args=(run, server.chat_url(False), n))
                       for n in range(args.streams)]  # fmt: skip
            threads.append(threading.Thread(target=sampler, args=(run, server.process.pid)))
            for thread in threads:
                thread.start()
            swap_and_step(client, server, run, loras[1], args.seconds)
            run.stop.wait(max(0.0, args.seconds - (time.perf_counter() - run.began)))
            run.stop.set()
            for thread in threads:
                thread.join(timeout=300)
            elapsed = time.perf_counter() - run.began
    finally:
        stop_server(server)
    section = report(run, args, elapsed, others)
    emit(SECTION, section, write=not args.no_write)


if __name__ == "__main__":
    main()
