"""A canary whose gate fails, timed: from the controller's rollback to the last request the
canary answered.

Starts ``loragate serve`` with a rollout policy that must fail (p95 latency ratio 0.01,
failure threshold 1, 5 s steps, 3 samples a side), publishes two small real PEFT LoRAs under
one alias, starts a rollout of the second at 50% and streams chats from several threads.
Each answer's version comes from ``x-loragate-version`` and its start from the client's
clock; the rollback's time is the ``rolled_back`` event in the rollout's history.

Reports, over ``--trials`` rollouts: the interval's end to the rollback (the controller's
tick), the rollback to the last canary answer that started after it (the routers' refresh),
how many such answers there were, and failed requests (target 0). Writes the table to
docs/benchmarks.md (``--no-write`` skips that); nothing asserts on time.

    .venv/bin/python bench/rollback.py [--trials 3] [--streams 4] [--no-write]
"""

from __future__ import annotations

import argparse
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
    start_server,
    stop_server,
)
from bench.report import emit, machine_description, wait_ready

SECTION = "## Canary rollback"
ALIAS = "gated"
INTERVAL_S = 5.0
FAILING_POLICY = {
    "LORAGATE_ROLLOUT_INTERVAL_S": str(INTERVAL_S),
    "LORAGATE_ROLLOUT_MIN_SAMPLES": "3",
    "LORAGATE_ROLLOUT_FAILURE_THRESHOLD": "1",
    "LORAGATE_ROLLOUT_MAX_P95_LATENCY_RATIO": "0.01",  # no canary can pass this gate
}


@dataclass
class Answers:
    served: list[tuple[float, str]] = field(default_factory=list)  # (start, version)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def asker(url: str, answers: Answers, worker: int) -> None:
    body = {"model": ALIAS, "max_tokens": 4, "temperature": 0,
            "conversation_id": None,
            "messages": [{"role": "user", "content": "Say hi."}]}  # fmt: skip
    with httpx.Client(timeout=120) as client:
        number = 0
        while not answers.stop.is_set():
            number += 1
            # A new conversation each time, so the sticky split sends some to the canary.
            body["conversation_id"] = f"w{worker}-{number}-{time.time_ns()}"
            started = time.time()
            try:
                response = client.post(url, json=body)
                version = response.headers.get("x-loragate-version", "?")
                with answers.lock:
                    if response.status_code == 200:
                        answers.served.append((started, version))
                    else:
                        answers.failures.append(f"{response.status_code} {response.text[:120]}")
            except httpx.HTTPError as exc:
                with answers.lock:
                    answers.failures.append(repr(exc))


@dataclass
class Trial:
    canary: str
    tick_s: float  # the step's interval over, to the rollback
    effect_s: float  # the rollback, to the start of the last canary answer after it
    late_answers: int  # canary answers that started after the rollback
    canary_answers: int  # before it: the canary did take traffic
    failures: int


def one_trial(client: httpx.Client, server: Server, lora: Path, streams: int) -> Trial:
    gateway = server.gateway
    canary = publish(client, server, lora, ALIAS)
    answers = Answers()
    threads = [threading.Thread(target=asker, args=(f"{gateway}/v1/chat/completions", answers, n))
               for n in range(streams)]  # fmt: skip
    for thread in threads:
        thread.start()
    admin(client, server, "/v1/admin/rollouts",
          {"alias": ALIAS, "version": canary, "steps": [50, 100]})  # fmt: skip
    started_at = None
    while True:
        card = client.get(f"{gateway}/v1/admin/rollouts/{ALIAS}").json()
        started_at = started_at or _event_time(card, "started")
        if card["state"] != "running":
            break
        time.sleep(0.2)
    time.sleep(3)  # answers that were already in flight finish
    answers.stop.set()
    for thread in threads:
        thread.join(timeout=120)
    rolled_back = _event_time(card, "rolled_back")
    late = [
        start for start, version in answers.served if version == canary and start >= rolled_back
    ]
    before = sum(version == canary for _, version in answers.served) - len(late)
    return Trial(canary, rolled_back - (started_at + INTERVAL_S),
                 (max(late) - rolled_back) if late else 0.0, len(late), before,
                 len(answers.failures))  # fmt: skip


def _event_time(card: dict[str, object], kind: str) -> float:
    history = card.get("history") or []
    assert isinstance(history, list)
    times = [datetime.fromisoformat(event["at"]).timestamp() for event in history
             if event["kind"] == kind]  # fmt: skip
    if not times:
        raise SystemExit(f"no {kind!r} event in the rollout: {card}")
    return times[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    if not (MODEL_DIR / "config.json").exists():
        raise SystemExit("run `loragate model prepare` first")
    data_dir = Path(tempfile.mkdtemp(prefix="loragate-bench-rollback-"))
    loras = make_loras(data_dir / "loras", args.trials + 1, rank=8)
    server = start_server(data_dir, FAILING_POLICY)
    trials = []
    try:
        wait_ready(f"{server.gateway}/readyz", server.process)
        with httpx.Client(timeout=600) as client:
            print(f"live: {publish(client, server, loras[0], ALIAS)}", flush=True)
            for lora in loras[1:]:
                trials.append(one_trial(client, server, lora, args.streams))
                print(f"  {trials[-1]}", flush=True)
    finally:
        stop_server(server)
    lines = [
        SECTION, "",
        f"`bench/rollback.py` on {machine_description()}, {datetime.now(UTC):%Y-%m-%d}: "
        f"{args.streams} threads chatting with alias `{ALIAS}` (new conversation per request) "
        f"while a canary at 50% fails its latency gate on purpose ({INTERVAL_S:g} s steps, "
        "failure threshold 1). Times from the rollout history and the client's clock.", "",
        "| canary | canary answers before | step over → rollback (s) | "
        "rollback → last canary answer (s) | canary answers after rollback | failed requests |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {t.canary} | {t.canary_answers} | {t.tick_s:.2f} | {t.effect_s:.2f} | "
          f"{t.late_answers} | {t.failures} |" for t in trials),
        "",
        "One process here: the rollback invalidates its router at once. Other replicas see it "
        "within the router's 1 s refresh.",
        "",
    ]  # fmt: skip
    emit(SECTION, "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
