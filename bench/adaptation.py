"""Does the loop make answers better on a domain nobody tuned it for?

For each seed, a new fictional company (trainer/demo/domain.py: names, numbers and which
facts it has all drawn from the seed) is played through the whole loop on one live
``loragate serve`` with every setting at its default, through the public API and CLI:

1. its documents are ingested and an alias is declared that answers with retrieval over them;
2. simulated users ask both questions of every fact through the alias, give 👎 and the right
   answer as a correction to wrong answers (right ones get 👍 and the house-style answer);
3. the operator approves the review queue;
4. ``loragate train --alias A`` runs (curate → recipe → QLoRA → gate → publish);
5. the base and the candidate (published or not) answer each fact's held-out paraphrase,
   which no user asked and nothing trained on, closed book and with retrieval; and the
   general-ability probes.

Prints one table per seed and the mean with the spread, and writes them to
docs/benchmarks.md. ``--seeds 3`` (the default) takes three new seeds from the clock unless
``--first-seed`` fixes them.

    python bench/adaptation.py [--seeds 3] [--first-seed N] [--facts 20] [--top-k K]
        [--no-write] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.launch import loragate, start_gateway
from bench.report import emit, machine_description

SECTION = "## Adaptation on generated domains"
# Another base (say one `loragate model prepare --model NAME` wrote) through the settings'
# own variables.
MODEL = os.environ.get("LORAGATE_BASE_MODEL_NAME", "SmolLM2-135M-Instruct")
MODEL_DIR = Path(os.environ.get("LORAGATE_BASE_MODEL_PATH", f"data/models/{MODEL}"))
ROWS = (
    ("base, closed book", "base", "closed"),
    ("base + retrieval", "base", "grounded"),
    ("adapted, closed book", "adapted", "closed"),
    ("adapted + retrieval", "adapted", "grounded"),
)


@dataclass
class SeedResult:
    seed: int
    company: str
    scores: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    probes: dict[str, float] = field(default_factory=dict)
    train_s: float = 0.0
    verdict: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    # The scorer's accuracy on the paraphrases of facts trained on, and of facts held out.
    by_split: dict[tuple[str, str], tuple[float | None, float | None]] = field(default_factory=dict)
    retrieval_hit: float = 0.0  # paraphrases whose top sources hold the fact
    gate_forms: dict[str, dict[str, float]] = field(default_factory=dict)  # side → form → acc
    top_k: int = 0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    base_url: str
    engine_url: str
    data_dir: Path
    chat_key: str
    admin_key: str
    top_k: int


def start_server(aliases: dict[str, str], model_dir: Path, top_k: int | None = None) -> Server:
    """``loragate serve`` on a new data directory, every alias answering with retrieval from
    ``top_k`` sources (None: as many as the gateway gives the base model by default)."""
    from core.settings import load_settings
    from gateway.wiring import sources_per_answer

    data_dir = Path(tempfile.mkdtemp(prefix="loragate-adaptation-"))
    declared = {"top_k": top_k} if top_k else {}
    retrieval = {alias: {"collection": c, **declared} for alias, c in aliases.items()}
    env = {"LORAGATE_RETRIEVAL_MODELS": json.dumps(retrieval), "LORAGATE_LOG_FORMAT": "json"}
    # The keys go into the store first; the gateway starts with them in place.
    settings_env = {**os.environ, "LORAGATE_DATA_DIR": str(data_dir),
                    "LORAGATE_BASE_MODEL_PATH": str(model_dir), **env}  # fmt: skip
    keys = [loragate(settings_env, "keys", "create", "--scope", scope, "--name", "bench").strip()
            for scope in ("chat", "admin")]  # fmt: skip
    launched = start_gateway(data_dir, env, model_dir=model_dir, new_session=True)
    # The gateway's own rule, on the settings this environment gives it (the variables added
    # above do not bear on it).
    answered_from = top_k or sources_per_answer(load_settings())
    return Server(launched.process, launched.env, launched.base_url, launched.engine_url,
                  data_dir, *keys, answered_from)  # fmt: skip


async def play(server: Server, seed: int, facts: int) -> SeedResult:
    from retrieval.embeddings import Embedder
    from trainer.demo import DemoUsers
    from trainer.demo.domain import generate_domain

    domain = generate_domain(seed, facts)
    alias = f"domain-{seed}"
    embed = Embedder().embed
    users = DemoUsers(server.base_url, server.chat_key, server.admin_key, embed)
    try:
        await users.setup(alias, domain.collection, domain.documents())
        served = await users.ask(domain.questions(), model=alias)
        await users.give_feedback(served)
        await users.wait_flagged(len(served), alias)
        await users.approve_all(alias)
        print(f"seed {seed} ({domain.company}): {len(served)} questions asked, "
              f"{sum(not s.correct for s in served)} corrected; training", flush=True)  # fmt: skip
        started = time.monotonic()
        output = await asyncio.to_thread(loragate, server.env, "train", "--alias", alias)
        result = SeedResult(seed, domain.company, train_s=time.monotonic() - started)
        print(output, flush=True)
        version = (await users.versions(alias))[0]
        await _measure(server, domain, version, result, embed)
        return result
    finally:
        await users.close()


async def _measure(
    server: Server, domain: Any, version: dict[str, Any], result: SeedResult, embed: Any
) -> None:
    from trainer.demo.measure import compare, held_out_facts

    report = version["eval_report"]
    result.verdict = "passed" if report["gate"]["passed"] else "rejected"
    result.top_k = server.top_k
    result.counts = report["dataset"]["counts"]
    result.steps = report["training"]["steps"]
    measured = await compare(
        server.engine_url, server.base_url, server.chat_key, domain,
        {"adapted": Path(version["path"])}, MODEL, embed, server.top_k,
    )  # fmt: skip
    held = held_out_facts(domain, report)
    split = {
        trained: [i for i, q in enumerate(domain.paraphrases()) if (q.fact in held) != trained]
        for trained in (True, False)
    }
    for key, accuracy in measured.paraphrases.items():
        result.scores[key] = (accuracy.scorer, accuracy.contains)
        result.by_split[key] = (accuracy.on(split[True]), accuracy.on(split[False]))
    result.probes = measured.probes
    _keep_answers(server.data_dir / f"answers-{domain.seed}.json", domain, measured)
    hits = measured.retrieval_hits
    result.retrieval_hit = sum(hits) / len(hits) if hits else 0.0
    result.gate_forms = {side: report[side]["holdout"].get("forms", {})
                         for side in ("candidate", "baseline")}  # fmt: skip


def _keep_answers(path: Path, domain: Any, measured: Any) -> None:
    """Every paraphrase's answers, for a look with ``--keep`` (the benchmark's figures are
    only as good as the scorer's reading of these)."""
    rows = [
        {"question": question.question, "reference": question.answer,
         **{f"{model} {mode}": [accuracy.answers[number], accuracy.correct[number]]
            for (model, mode), accuracy in measured.paraphrases.items()}}
        for number, question in enumerate(domain.paraphrases())
    ]  # fmt: skip
    path.write_text(json.dumps(rows, indent=1))


def seed_table(result: SeedResult) -> str:
    lines = [
        f"Seed {result.seed} ({result.company}): dataset {result.counts}, {result.steps} steps, "
        f"trained and gated in {result.train_s:.0f} s, gate {result.verdict}.",
        "",
        "| configuration | held-out paraphrase (scorer) | (contains key) "
        "| facts trained on | facts held out |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, model, mode in ROWS:
        scorer, contains = result.scores[(model, mode)]
        trained, held = (_share(value) for value in result.by_split[(model, mode)])
        lines.append(f"| {label} | {scorer:.2f} | {contains:.2f} | {trained} | {held} |")
    lines.append(f"| general probes, base → adapted | {result.probes['base']:.2f} → "
                 f"{result.probes['adapted']:.2f} | | | |")  # fmt: skip
    lines.append(f"| right source in the top {result.top_k} | {result.retrieval_hit:.2f} | | | |")
    forms = result.gate_forms
    for form, accuracy in forms.get("candidate", {}).items():
        base = forms.get("baseline", {}).get(form)
        lines.append(f"| gate holdout, {form}: base → candidate | {_share(base)} → "
                     f"{accuracy:.2f} | | | |")  # fmt: skip
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_table(results: list[SeedResult]) -> str:
    def spread(values: list[float]) -> str:
        mean = statistics.fmean(values)
        return f"{mean:.2f} ({min(values):.2f}-{max(values):.2f})"

    lines = [
        f"Mean over {len(results)} seeds (min-max in brackets).",
        "",
        "| configuration | held-out paraphrase (scorer) | (contains key) |",
        "| --- | ---: | ---: |",
    ]
    for label, model, mode in ROWS:
        scorer = [result.scores[(model, mode)][0] for result in results]
        contains = [result.scores[(model, mode)][1] for result in results]
        lines.append(f"| {label} | {spread(scorer)} | {spread(contains)} |")
    for label, model, mode in ROWS[1::2]:  # with retrieval: by split
        for index, part in ((0, "facts trained on"), (1, "facts held out")):
            values = [v for r in results if (v := r.by_split[(model, mode)][index]) is not None]
            if values:
                lines.append(f"| {label}, {part} | {spread(values)} | |")
    lines.append(f"| right source in the top {results[0].top_k} | "
                 f"{spread([r.retrieval_hit for r in results])} | |")  # fmt: skip
    drop = [result.probes["adapted"] - result.probes["base"] for result in results]
    lines.append(f"| general probes, adapted - base | {spread(drop)} | |")
    lines.append(f"| train + gate, seconds | {spread([r.train_s for r in results])} | |")
    passed = sum(result.verdict == "passed" for result in results)
    lines.append(f"| gate passed | {passed} of {len(results)} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=None)
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument(
        "--top-k", type=int, default=None,
        help="sources the alias answers with (default: the gateway's for the base model)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the data directory (adapters, store, logs) for a look",
    )
    args = parser.parse_args()
    first = args.first_seed if args.first_seed is not None else int(time.time()) % 100_000
    seeds = [first + offset for offset in range(args.seeds)]
    server = start_server({f"domain-{seed}": f"domain-{seed}" for seed in seeds},
                          MODEL_DIR.resolve(), args.top_k)  # fmt: skip
    try:
        results = [asyncio.run(play(server, seed, args.facts)) for seed in seeds]
    except BaseException:
        print(f"kept for a look: {server.data_dir} (serve.log, logs/vllm.log)", flush=True)
        raise
    finally:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(60)
    if args.keep:
        print(f"kept: {server.data_dir}", flush=True)
    else:
        shutil.rmtree(server.data_dir, ignore_errors=True)
    top_k_flag = f" --top-k {args.top_k}" if args.top_k else ""
    body = "\n\n".join([summary_table(results), *(seed_table(result) for result in results)])
    intro = (
        f"`python bench/adaptation.py --seeds {args.seeds}{top_k_flag}` "
        f"({args.facts} facts a domain, {server.top_k} source(s) an answer, "
        f"seeds {seeds[0]}-{seeds[-1]}, base {MODEL}, every other setting at its default; "
        f"{machine_description()}). "
        "Held-out paraphrases: one per fact, never asked by the users and never trained on. "
        "Scorer: the evaluation gate's; contains key: the answer contains the fact's short "
        "answer."
    )
    emit(SECTION, f"{SECTION}\n\n{intro}\n\n{body}\n", not args.no_write)


if __name__ == "__main__":
    main()
