"""Adapters, measured: publish-to-first-served latency, hot-swap failures, multi-adapter tok/s.

Starts ``loragate serve`` (gateway + supervised vLLM CPU server) on free ports with small real
PEFT LoRAs made on the prepared base model, then:

1. publishes adapters under fresh aliases and times each from ``POST /v1/admin/adapters``
   to the first chat answered by that version (``x-loragate-version``);
2. streams chats to one alias from several threads while a second version is published,
   rolled out at 100% and promoted through the admin API, counting failed requests;
3. measures completion tokens/s at a fixed concurrency for the base model and for mixes of
   1, 4 and 8 pinned adapter versions, through the gateway and directly against vLLM.

Prints the tables and writes them to docs/benchmarks.md (``--no-write`` skips that). Nothing
here asserts on time. The serve subprocess's output goes to a log file whose path is printed.

    .venv/bin/python bench/adapters.py [--publishes 3] [--requests 24] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.launch import MODEL, MODEL_DIR, start_gateway
from bench.report import machine_description, percentile, wait_ready, write_section
from trainer.sample import sample_adapter

PROMPT = [{"role": "user", "content": "Name three colours of the rainbow."}]
SECTION = "## Adapters"
MIX_SIZES = (1, 4, 8)


# -- server ---------------------------------------------------------------------------------


@dataclass
class Server:
    gateway: str  # http://127.0.0.1:<port>
    engine: str  # http://127.0.0.1:<engine port>
    log: Path
    process: subprocess.Popen[bytes]

    def chat_url(self, direct: bool) -> str:
        return f"{self.engine if direct else self.gateway}/v1/chat/completions"

    def log_lines(self, *needles: str, limit: int = 20) -> list[str]:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        hits = [line for line in lines if any(needle in line for needle in needles)]
        return hits[-limit:]


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None) -> Server:
    env = {
        "LORAGATE_AUTH_ENABLED": "false",
        "LORAGATE_MAX_LORAS": "8",
        "LORAGATE_MAX_CPU_LORAS": "16",
        "LORAGATE_RECONCILE_INTERVAL_S": "2",
        "LORAGATE_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    launched = start_gateway(data_dir, env, wait=False)
    return Server(launched.base_url, launched.engine_url, launched.log, launched.process)


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def make_loras(root: Path, count: int, rank: int) -> list[Path]:
    """``count`` distinct small PEFT LoRAs (different seeds) on the prepared base model."""
    paths = []
    for seed in range(count):
        target = root / f"lora-{seed}"
        sample_adapter(target, MODEL_DIR, seed=seed, rank=rank)
        paths.append(target)
    return paths


def other_workloads() -> list[str]:
    """CPU-heavy processes on this machine outside this script's process tree."""
    processes: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
        except OSError:
            continue
        processes[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), command)
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in processes.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    found = set()
    for pid, (_, command) in processes.items():
        if pid in ours:
            continue
        if "pytest" in command:
            found.add("a pytest run")
        elif "vllm.entrypoints" in command:
            found.add("another vLLM server")
        elif "gateway.cli serve" in command:
            found.add("another loragate serve")
    return sorted(found)


# -- admin API ------------------------------------------------------------------------------


def admin(
    client: httpx.Client, server: Server, path: str, body: dict[str, Any] | None = None
) -> Any:
    response = client.post(f"{server.gateway}{path}", json=body or {})
    if response.status_code >= 400:
        raise SystemExit(f"POST {path} -> {response.status_code}: {response.text[:500]}")
    return response.json()


def publish(client: httpx.Client, server: Server, path: Path, alias: str) -> str:
    card = admin(client, server, "/v1/admin/adapters", {"path": str(path), "alias": alias})
    return str(card["name"])


def engine_loras(client: httpx.Client, server: Server) -> set[str]:
    """Adapter names vLLM itself lists as loaded (entries of /v1/models with a parent)."""
    try:
        models = client.get(f"{server.engine}/v1/models").json()["data"]
    except (httpx.HTTPError, KeyError, ValueError):
        return set()
    return {model["id"] for model in models if model.get("parent")}


def wait_loaded(
    client: httpx.Client, server: Server, names: list[str], timeout_s: float = 300
) -> None:
    deadline = time.monotonic() + timeout_s
    while not set(names) <= engine_loras(client, server):
        if time.monotonic() > deadline:
            missing = sorted(set(names) - engine_loras(client, server))
            raise SystemExit(f"vLLM never loaded {missing}")
        time.sleep(0.5)


# -- 1. publish to first served -------------------------------------------------------------


@dataclass
class Publish:
    alias: str
    version: str
    publish_s: float  # the POST itself
    first_served_s: float  # from before the POST to the first answer by the version
    attempts: int
    refusals: list[str]
    warm_s: float  # one more identical request, adapter already loaded
    load_s: float | None  # the reconciler's load of this version into vLLM


def chat_once(client: httpx.Client, url: str, model: str, max_tokens: int) -> httpx.Response:
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    return client.post(url, json=body)


def publish_to_first_served(
    client: httpx.Client, server: Server, path: Path, alias: str, timeout_s: float = 300
) -> Publish:
    url = server.chat_url(direct=False)
    loaded_before = adapter_load_seconds(client, server)
    started = time.perf_counter()
    version = publish(client, server, path, alias)
    published = time.perf_counter()
    attempts, refusals = 0, []
    while True:
        attempts += 1
        response = chat_once(client, url, alias, max_tokens=1)
        if response.status_code == 200 and response.headers.get("x-loragate-version") == version:
            break
        refusals.append(
            f"{response.status_code} {response.headers.get('x-loragate-version')} "
            f"{response.text[:200]}"
        )
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"{version} was never served: {refusals[-3:]}")
        time.sleep(0.1)
    first_served = time.perf_counter() - started
    load = load_since(client, server, loaded_before)  # nothing else loads meanwhile
    warm_started = time.perf_counter()
    chat_once(client, url, alias, max_tokens=1).raise_for_status()
    warm = time.perf_counter() - warm_started
    return Publish(
        alias, version, published - started, first_served, attempts, refusals, warm, load
    )


# -- 2. hot swap under concurrent streams -----------------------------------------------------


@dataclass
class StreamResult:
    started: float
    seconds: float
    version: str | None
    failure: str | None = None


@dataclass
class SwapRun:
    results: list[StreamResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def add(self, result: StreamResult) -> None:
        with self.lock:
            self.results.append(result)

    def served_by(self, version: str, since: float = float("-inf")) -> int:
        with self.lock:
            return sum(
                1
                for result in self.results
                if result.failure is None and result.version == version and result.started >= since
            )

    def total(self) -> int:
        with self.lock:
            return len(self.results)


@dataclass
class StreamRead:
    version: str | None  # x-loragate-version
    failure: str | None
    ttft_s: float | None  # to the first content chunk


def read_stream(client: httpx.Client, url: str, body: dict[str, Any]) -> StreamRead:
    """One streamed chat; a failure is non-200, an SSE error event, data after [DONE], or no
    final [DONE]."""
    started = time.perf_counter()
    version, failure, ttft, done = None, None, None, False
    try:
        with client.stream("POST", url, json=body) as response:
            version = response.headers.get("x-loragate-version")
            if response.status_code != 200:
                response.read()
                failure = f"HTTP {response.status_code}: {response.text[:300]}"
            else:
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[len("data: ") :]
                    if payload == "[DONE]":
                        done = True
                        continue
                    if done:
                        failure = f"data after [DONE]: {payload[:200]}"
                        break
                    event = json.loads(payload)
                    if "error" in event:
                        failure = f"SSE error event: {payload[:300]}"
                        break
                    if ttft is None and any((choice.get("delta") or {}).get("content")
                                            for choice in event.get("choices") or []):  # fmt: skip
                        ttft = time.perf_counter() - started
                if failure is None and not done:
                    failure = "stream ended without data: [DONE]"
    except (httpx.HTTPError, ValueError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    return StreamRead(version, failure, ttft)


def stream_once(client: httpx.Client, url: str, model: str, max_tokens: int) -> StreamResult:
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0,
            "stream": True}  # fmt: skip
    started = time.perf_counter()
    read = read_stream(client, url, body)
    return StreamResult(started, time.perf_counter() - started, read.version, read.failure)


def streamer(run: SwapRun, url: str, alias: str, max_tokens: int) -> None:
    with httpx.Client(timeout=300) as client:
        while not run.stop.is_set():
            run.add(stream_once(client, url, alias, max_tokens))


def wait_for(check: Any, timeout_s: float, what: str) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f}s")
        time.sleep(0.05)
    return time.perf_counter() - started


@dataclass
class Swap:
    old: str
    new: str
    streams: int
    max_tokens: int
    results: list[StreamResult]
    rollout_at: float
    promote_at: float
    canary_first_s: float  # rollout POST to the first request served by the new version
    canary_load_s: float | None  # the reconciler's load of the new version into vLLM
    problem: str | None  # a timeout or an admin refusal, if any


def hot_swap(
    client: httpx.Client, server: Server, paths: tuple[Path, Path], streams: int,
    max_tokens: int, after_promote: int, timeout_s: float = 300,
) -> Swap:  # fmt: skip
    alias = "swap"
    old = publish_to_first_served(client, server, paths[0], alias).version
    run = SwapRun()
    url = server.chat_url(direct=False)
    threads = [
        threading.Thread(target=streamer, args=(run, url, alias, max_tokens), daemon=True)
        for _ in range(streams)
    ]
    for thread in threads:
        thread.start()
    new, rollout_at, promote_at, problem = "", 0.0, 0.0, None
    canary_first, canary_load = float("nan"), None
    try:
        wait_for(lambda: run.total() >= 2 * streams, timeout_s, "streams before the swap")
        loaded_before = adapter_load_seconds(client, server)
        new = publish(client, server, paths[1], alias)
        rollout_at = time.perf_counter()
        admin(client, server, "/v1/admin/rollouts",
              {"alias": alias, "version": new, "steps": [100]})  # fmt: skip
        canary_first = wait_for(lambda: run.served_by(new) >= 1, timeout_s, f"{new} as canary")
        canary_load = load_since(client, server, loaded_before)
        wait_for(lambda: run.served_by(new) >= 2, timeout_s, f"{new} as canary")
        promote_at = time.perf_counter()
        admin(client, server, f"/v1/admin/rollouts/{alias}/promote")
        wait_for(lambda: run.served_by(new, since=promote_at) >= after_promote, timeout_s,
                 f"{after_promote} answers by {new} after promotion")  # fmt: skip
    except TimeoutError as exc:
        problem = str(exc)
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(timeout=300)
    with run.lock:
        results = list(run.results)
    return Swap(
        old,
        new,
        streams,
        max_tokens,
        results,
        rollout_at,
        promote_at,
        canary_first,
        canary_load,
        problem,
    )


# -- 3. throughput --------------------------------------------------------------------------


@dataclass
class Throughput:
    tokens: int
    seconds: float
    latencies: list[float]
    failures: list[str]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def throughput(
    url: str, models: list[str], requests: int, concurrency: int, max_tokens: int, gateway: bool
) -> Throughput:
    """``requests`` chats spread round-robin over ``models``, ``concurrency`` at a time."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(index: int) -> tuple[int, float, str | None]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=600)
            clients.append(local.client)
        model = models[index % len(models)]
        body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True}  # fmt: skip
        started = time.perf_counter()
        try:
            response = local.client.post(url, json=body)
        except httpx.HTTPError as exc:
            return 0, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            return 0, seconds, f"HTTP {response.status_code}: {response.text[:300]}"
        served = response.headers.get("x-loragate-version") if gateway else None
        served = served or response.json().get("model")
        if served != model:
            return 0, seconds, f"asked for {model}, answered by {served}"
        return int(response.json()["usage"]["completion_tokens"]), seconds, None

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    return Throughput(
        tokens=sum(tokens for tokens, _, _ in outcomes),
        seconds=elapsed,
        latencies=[seconds for _, seconds, failure in outcomes if failure is None],
        failures=[failure for _, _, failure in outcomes if failure is not None],
    )


def warm_up(url: str, model: str) -> httpx.Response:
    with httpx.Client(timeout=600) as client:
        return chat_once(client, url, model, max_tokens=4)


def measure_mixes(
    client: httpx.Client, server: Server, versions: list[str], args: argparse.Namespace
) -> dict[str, dict[str, Throughput]]:
    mixes = {"base only": [MODEL]}
    for size in MIX_SIZES:
        if size <= len(versions):
            mixes[f"{size} adapter{'s' if size > 1 else ''}"] = versions[:size]
    wait_loaded(client, server, versions)
    warm_ups = [(server.chat_url(direct), model) for direct in (True, False)
                for model in (MODEL, *versions)]  # fmt: skip
    with ThreadPoolExecutor(max_workers=len(versions) + 1) as pool:  # the first is slower
        for response in pool.map(lambda job: warm_up(*job), warm_ups):
            response.raise_for_status()
    rows: dict[str, dict[str, Throughput]] = {}
    for turn, (name, models) in enumerate(mixes.items()):
        rows[name] = {}
        order = ("direct", "gateway") if turn % 2 == 0 else ("gateway", "direct")
        for path in order:  # alternate which goes first, so drift hits both alike
            rows[name][path] = throughput(
                server.chat_url(direct=path == "direct"), models, args.requests,
                args.concurrency, args.max_tokens, gateway=path == "gateway",
            )  # fmt: skip
            result = rows[name][path]
            print(f"  {name:<11} {path:<8} {result.tokens_per_s:6.1f} tok/s "
                  f"({result.tokens} tokens, {result.seconds:.1f} s, "
                  f"{len(result.failures)} failed)", flush=True)  # fmt: skip
    return rows


# -- report ---------------------------------------------------------------------------------


def adapter_load_seconds(client: httpx.Client, server: Server) -> float | None:
    """The sum of the gateway's ``loragate_adapter_load_seconds`` histogram: vLLM's time
    loading adapters so far."""
    try:
        text = client.get(f"{server.gateway}/metrics").text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("loragate_adapter_load_seconds_sum "):
            return float(line.split()[-1])
    return 0.0  # no load observed yet


def load_since(client: httpx.Client, server: Server, before: float | None) -> float | None:
    """How long the one load since ``before`` took (nothing else loads in between)."""
    after = adapter_load_seconds(client, server)
    return None if after is None or before is None else after - before


def publish_table(publishes: list[Publish]) -> list[str]:
    lines = [
        "### Publish to first served",
        "",
        "| alias | version | publish POST ms | vLLM load s | first served s | attempts | "
        "next request s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for item in publishes:
        load = "—" if item.load_s is None else f"{item.load_s:.2f}"
        lines.append(
            f"| {item.alias} | {item.version} | {item.publish_s * 1000:.0f} | {load} | "
            f"{item.first_served_s:.2f} | {item.attempts} | {item.warm_s:.2f} |"
        )
    median = statistics.median(item.first_served_s for item in publishes)
    warm = statistics.median(item.warm_s for item in publishes)
    lines += [
        "",
        f"Median publish-to-first-served: **{median:.2f} s** (the same 1-token request once "
        f"the version is loaded: {warm:.2f} s). Clock runs from before `POST "
        "/v1/admin/adapters` of a new alias until a 1-token chat to the alias comes back 200 "
        "with `x-loragate-version` equal to the new version; the first version of an alias "
        "goes live at once, the reconciler loads it into vLLM, and the request waits for "
        "that (`adapter_wait_s`) rather than failing.",
    ]
    lines[-1] += (
        " vLLM load s is the growth of the gateway's `loragate_adapter_load_seconds` histogram "
        "sum over the publish; next request s is the same chat again, already loaded."
    )
    refused = [(item.version, reason) for item in publishes for reason in item.refusals]
    if refused:
        lines += ["", "Refused attempts before the first answer:", ""]
        lines += [f"* {version}: `{reason}`" for version, reason in refused[:10]]
    return lines


def swap_table(swap: Swap) -> list[str]:
    def phase(result: StreamResult) -> str:
        if not swap.rollout_at or result.started < swap.rollout_at:
            return "before the rollout"
        if not swap.promote_at or result.started < swap.promote_at:
            return "canary at 100%"
        return "after promote"

    phases = ("before the rollout", "canary at 100%", "after promote")
    counts = {name: Counter[str]() for name in phases}
    for result in swap.results:
        counts[phase(result)]["total"] += 1
        if result.failure is not None:
            counts[phase(result)]["failed"] += 1
        elif result.version in (swap.old, swap.new):
            counts[phase(result)][result.version] += 1
        else:
            counts[phase(result)]["other"] += 1
    total = sum((counts[name] for name in phases), Counter[str]())
    failures = [result for result in swap.results if result.failure is not None]
    seconds = [result.seconds for result in swap.results if result.failure is None]
    lines = [
        "### Hot swap under concurrent streams",
        "",
        f"| phase (by request start) | requests | failed | served by {swap.old} | "
        f"served by {swap.new or '(new)'} |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, count in [*((name, counts[name]) for name in phases), ("**total**", total)]:
        lines.append(
            f"| {name} | {count['total']} | {count['failed']} | {count[swap.old]} | "
            f"{count[swap.new]} |"
        )
    lines += [
        "",
        f"**{len(failures)} failed of {len(swap.results)}** (target: 0). {swap.streams} threads "
        f"stream chats (`stream: true`, max_tokens {swap.max_tokens}) to the alias `swap` back "
        f"to back while `{swap.new}` "
        "is published, rolled out with `steps: [100]` and, once it has answered twice, promoted "
        "via the admin API. A request fails on a non-200, an SSE `error` event, or a stream "
        "without the final `data: [DONE]`.",
    ]
    if swap.canary_first_s == swap.canary_first_s:  # not NaN
        lines[-1] += (
            f" From the rollout POST to the first answer by `{swap.new}`: "
            f"{swap.canary_first_s:.2f} s (includes loading it into vLLM"
            + (
                f", {swap.canary_load_s:.2f} s by `loragate_adapter_load_seconds`"
                if swap.canary_load_s is not None
                else ""
            )
            + ", and that request's own generation)."
        )
        routed = [r.started for r in swap.results if r.version == swap.new and swap.rollout_at]
        if routed:
            lines[-1] += (
                f" The first request routed to it started {min(routed) - swap.rollout_at:.2f} s "
                "after the POST: each thread first finishes the request it is in."
            )
    if seconds:
        lines[-1] += (
            f" Stream latency p50 {statistics.median(seconds):.2f} s, p95 "
            f"{percentile(seconds, 0.95):.2f} s, max {max(seconds):.2f} s."
        )
    if swap.problem:
        lines += ["", f"Stopped early: {swap.problem}."]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"* `{result.failure}` (version header {result.version})"
                  for result in failures[:10]]  # fmt: skip
    return lines


def throughput_table(rows: dict[str, dict[str, Throughput]], args: argparse.Namespace) -> list[str]:
    base = rows["base only"]
    lines = [
        "### Multi-adapter throughput",
        "",
        "| mix | through loragate tok/s | vLLM direct tok/s | loragate / direct | "
        "loragate vs base | direct vs base | p50 s loragate | p50 s direct | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        gateway, direct = row["gateway"], row["direct"]
        lines.append(
            f"| {name} | {gateway.tokens_per_s:.1f} | {direct.tokens_per_s:.1f} | "
            f"{ratio(gateway.tokens_per_s, direct.tokens_per_s)} | "
            f"{ratio(gateway.tokens_per_s, base['gateway'].tokens_per_s)} | "
            f"{ratio(direct.tokens_per_s, base['direct'].tokens_per_s)} | "
            f"{median_or_dash(gateway.latencies)} | {median_or_dash(direct.latencies)} | "
            f"{len(gateway.failures) + len(direct.failures)} |"
        )
    lines += [
        "",
        f"{args.requests} non-streaming chats per cell, {args.concurrency} at a time, "
        f"max_tokens {args.max_tokens} with `ignore_eos` (every answer is exactly that long), "
        "temperature 0; adapter mixes spread requests round-robin over pinned versions "
        "`<alias>-v1`, the same names sent to the gateway and to vLLM (where the reconciler "
        "loaded them). tok/s is completion tokens over the cell's wall time; each adapter was "
        "warmed with one request first, and the direct and gateway cells alternate which runs "
        "first.",
    ]
    failures = [
        f"{name} {path}: `{failure}`"
        for name, row in rows.items()
        for path, result in row.items()
        for failure in result.failures[:3]
    ]
    if failures:
        lines += ["", "Failures:", "", *(f"* {failure}" for failure in failures[:10])]
    return lines


def join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference else "—"


def median_or_dash(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "—"


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishes", type=int, default=3, help="fresh aliases to time")
    parser.add_argument("--streams", type=int, default=4, help="streaming threads in the swap")
    parser.add_argument("--stream-tokens", type=int, default=8, help="max_tokens per stream")
    parser.add_argument(
        "--after-promote", type=int, default=12,
        help="answers by the new version after promotion before the swap stops",
    )  # fmt: skip
    parser.add_argument("--requests", type=int, default=16, help="chats per throughput cell")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of the test adapters")
    parser.add_argument("--note", default="", help="a sentence added to the section")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    if not (MODEL_DIR / "config.json").exists():
        raise SystemExit("run `loragate model prepare` first")

    begun = time.monotonic()
    others = set(other_workloads())
    load_before = os.getloadavg()[0]
    data_dir = Path(tempfile.mkdtemp(prefix="loragate-bench-adapters-"))
    mix_count = max(MIX_SIZES)
    print(f"making {args.publishes + 2 + mix_count} LoRAs (rank {args.rank}) ...", flush=True)
    loras = make_loras(data_dir / "loras", args.publishes + 2 + mix_count, args.rank)
    server = start_server(data_dir)
    print(f"loragate serve: {server.gateway}, vLLM {server.engine}, log {server.log}", flush=True)
    try:
        start_s = wait_ready(f"{server.gateway}/readyz", server.process)
        print(f"ready after {start_s:.1f} s", flush=True)
        with httpx.Client(timeout=600) as client:
            chat_once(client, server.chat_url(direct=False), MODEL, 4).raise_for_status()
            publishes = []
            for index in range(args.publishes):
                publishes.append(
                    publish_to_first_served(client, server, loras[index], f"fresh{index}")
                )
                print(f"  {publishes[-1].version}: first served after "
                      f"{publishes[-1].first_served_s:.2f} s", flush=True)  # fmt: skip
            others |= set(other_workloads())
            print("hot swap ...", flush=True)
            swap_paths = (loras[args.publishes], loras[args.publishes + 1])
            swap = hot_swap(client, server, swap_paths, args.streams, args.stream_tokens,
                            args.after_promote)  # fmt: skip
            failed = sum(1 for result in swap.results if result.failure is not None)
            print(f"  {len(swap.results)} requests, {failed} failed", flush=True)
            others |= set(other_workloads())
            print("throughput ...", flush=True)
            mix = [publish(client, server, path, f"mix{index}")
                   for index, path in enumerate(loras[args.publishes + 2 :])]  # fmt: skip
            rows = measure_mixes(client, server, mix, args)
            others |= set(other_workloads())
        problems = server.log_lines("ERROR", "Traceback", "WARNING", '"level": "error"')
    finally:
        stop_server(server)
    minutes = (time.monotonic() - begun) / 60
    table = report(args, start_s, publishes, swap, rows, others, load_before, minutes)
    print(table)
    if problems:
        print("\nserve log (errors and warnings):", *problems, sep="\n")
    print(f"\nserve log: {server.log}")
    if not args.no_write:
        write_section(SECTION, table)


def report(
    args: argparse.Namespace, start_s: float, publishes: list[Publish], swap: Swap,
    rows: dict[str, dict[str, Throughput]], others: set[str], load_before: float, minutes: float,
) -> str:  # fmt: skip
    try:
        vllm = f" · vLLM {metadata.version('vllm')}"
    except metadata.PackageNotFoundError:
        vllm = ""
    lines = [
        SECTION,
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine_description()} · "
        f"{os.cpu_count()} cores · Python {platform.python_version()}{vllm} · "
        f"rank-{args.rank} LoRAs on q_proj/v_proj · max_loras 8, max_cpu_loras 16, "
        f"reconcile_interval_s 2 · `python bench/adapters.py` ({minutes:.1f} min; vLLM ready "
        f"after {start_s:.0f} s)",
        "",
    ]
    if others:
        lines += [
            f"Noisy numbers: {join(sorted(others))} shared this machine's "
            f"{os.cpu_count()} cores during the run (load average {load_before:.1f} at the "
            "start), so latencies are upper bounds and throughput lower bounds.",
            "",
        ]
    if args.note:
        lines += [args.note, ""]
    lines += [*publish_table(publishes), ""]
    lines += [*swap_table(swap), ""]
    lines += [*throughput_table(rows, args), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
