"""Trainer, measured on the embedded base (SmolLM2-135M) and the demo domain.

1. **Cost of the method**: tokens/s and peak RSS of QLoRA (4-bit NF4 base), LoRA (bf16 base)
   and full fine-tuning, side by side, each in its own process, on the same grounded demo
   examples, batch and number of steps. This checks the often-quoted "LoRA/QLoRA cut compute
   and memory by up to 70%" on this base and this CPU.
2. **Time to a candidate**: from N approved examples to a published candidate (curate →
   QLoRA → evaluate through vLLM → gate → publish), for N = 50 and 200, through a real
   ``loragate serve``; the examples come from simulated users of the demo alias.
3. **Does it help**: holdout accuracy of the base without retrieval, the base with retrieval,
   and the base with retrieval and the adapter, on the N = 200 run's frozen holdout.

Prints the tables and writes them to docs/benchmarks.md (``--no-write`` skips that).

    .venv/bin/python bench/trainer.py [--steps 8] [--sizes 50,200] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.launch import MODEL, MODEL_DIR, REPO, start_gateway
from bench.report import machine_description, write_section
from trainer.dataset import Example

SECTION = "## Trainer"
METHODS = ("qlora", "lora", "full")
VARIANTS = ("{q}", "{q} I bought one last month.", "Hello! {q} Thanks in advance.")


# -- 1. cost of the method ------------------------------------------------------------------
def grounded_examples(work: Path) -> list[Example]:
    """Each demo question with the sources retrieval gives it, as the gateway would serve it."""
    from core.settings import load_settings
    from core.store import Database
    from gateway.ingest import ingest_path
    from gateway.wiring import build_retriever
    from retrieval.grounding import ground_messages
    from trainer.demo import COLLECTION, documents, questions

    settings = load_settings(data_dir=work, log_level="WARNING")
    docs = work / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for document in documents():
        (docs / document["source"]).write_text(document["markdown"])
    ingest_path(settings, docs, COLLECTION)

    async def build() -> list[Example]:
        db = Database(settings.resolved_database_url)
        retriever = build_retriever(settings, db)
        try:
            examples = []
            for number, question in enumerate(questions()):
                hits = await retriever.search(COLLECTION, question.question, 2, 0.3)
                messages = ground_messages([{"role": "user", "content": question.question}], hits)
                examples.append(Example(f"q{number}", "bench", messages, question.answer,
                                        "correction", "correction"))  # fmt: skip
            return examples
        finally:
            await db.dispose()

    return asyncio.run(build())


def measure(method: str, steps: int, examples_file: Path) -> dict[str, Any]:
    """Runs in a child process, so peak RSS is this method's alone."""
    from trainer.qlora import TrainConfig, train

    rows = [Example.from_json(json.loads(line)) for line in examples_file.read_text().splitlines()]
    config = TrainConfig(method=method, max_steps=steps, eval_every=0,  # type: ignore[arg-type]
                         checkpoint_every=10**6, batch_size=4,
                         compute_dtype="bfloat16")  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        result = train(rows, [], MODEL_DIR, Path(work), config)
    return {"method": method, "tokens_per_s": result.tokens_per_s, "seconds": result.seconds,
            "peak_rss_mb": result.peak_memory_mb, "steps": result.steps,
            "trainable": result.trainable_parameters,
            "loss": round(result.train_loss, 3)}  # fmt: skip


def compare_methods(examples: list[Example], steps: int, work: Path) -> list[dict[str, Any]]:
    examples_file = work / "examples.jsonl"
    examples_file.write_text("".join(json.dumps(e.to_json()) + "\n" for e in examples))
    results = []
    for method in METHODS:
        print(f"measuring {method} ({steps} steps)...", flush=True)
        output = subprocess.run(
            [sys.executable, __file__, "--measure", method, "--steps", str(steps),
             "--examples", str(examples_file)],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
    return results


# -- 2. time to a candidate -----------------------------------------------------------------
@dataclass
class Run:
    size: int
    approved: int
    train: int
    holdout: int
    steps: int
    train_s: float
    total_s: float
    base_accuracy: float
    candidate_accuracy: float
    probes_change: float
    state: str
    report: dict[str, Any]


def start_server(data_dir: Path, aliases: list[str]) -> tuple[subprocess.Popen[bytes], str, str]:
    from trainer.demo import COLLECTION

    retrieval = {alias: {"collection": COLLECTION, "top_k": 2} for alias in aliases}
    env = {"LORAGATE_AUTH_ENABLED": "false", "LORAGATE_LOG_LEVEL": "WARNING",
           "LORAGATE_RETRIEVAL_MODELS": json.dumps(retrieval)}  # fmt: skip
    launched = start_gateway(data_dir, env)
    return launched.process, launched.base_url, launched.engine_url


def asked_questions(size: int) -> list[Any]:
    from trainer.demo import Question, questions

    pool = [Question(q.fact, variant.format(q=q.question), q.answer)
            for variant in VARIANTS for q in questions()]  # fmt: skip
    return pool[:size]


async def approve_demo_examples(gateway: str, alias: str, size: int, embed: Any) -> int:
    """Demo users ask ``size`` questions of ``alias``, rate and correct the answers, and an
    operator approves every flag; how many examples were approved."""
    from trainer.demo import DemoUsers

    users = DemoUsers(gateway, "none", "none", embed)
    try:
        await users.setup(alias)
        served = await users.ask(asked_questions(size), model=alias)
        await users.give_feedback(served)
        await asyncio.sleep(2)  # the conversation rules flag asynchronously
        return int(await users.approve_all(alias))
    finally:
        await users.close()


async def time_to_candidate(
    size: int, gateway: str, engine: str, data_dir: Path, embed: Any
) -> Run:
    from core.settings import load_settings
    from gateway.wiring import trainer_parts

    alias = f"cycles-n{size}"
    approved = await approve_demo_examples(gateway, alias, size, embed)
    settings = load_settings(
        data_dir=data_dir, engine_mode="external", engine_urls=engine, base_model_path=MODEL_DIR,
        train_near_duplicate_similarity=0.99, trainer_auto_rollout=False, log_level="WARNING",
    )  # fmt: skip
    started = time.perf_counter()
    async with trainer_parts(settings) as parts:
        outcome = await parts.job.run(alias, "bench")
    total = time.perf_counter() - started
    report = outcome.report
    counts = report["dataset"]["counts"]
    return Run(
        size, approved, counts["train"] + counts["validation"], counts["holdout"],
        report["training"]["steps"], report["training"]["seconds"], round(total, 1),
        report["baseline"]["holdout"]["accuracy"], report["candidate"]["holdout"]["accuracy"],
        report["gate"]["probe_change"], outcome.state, report,
    )  # fmt: skip


async def without_retrieval(run: Run, engine: str, embed: Any) -> float:
    """The base model on the same holdout questions with the grounding message removed."""
    from trainer.dataset import read_snapshot
    from trainer.evaluate import Evaluator

    holdout = read_snapshot(Path(run.report["dataset"]["path"])).examples("holdout")
    bare = [Example(e.id, e.alias, [m for m in e.messages if m["role"] != "system"], e.reply,
                    e.origin, e.stratum) for e in holdout]  # fmt: skip
    evaluator = Evaluator(engine, embed)
    try:
        return (await evaluator.score_holdout(MODEL, bare)).accuracy
    finally:
        await evaluator.close()


# -- report -----------------------------------------------------------------------------------
def tables(methods: list[dict[str, Any]], runs: list[Run], bare: float | None) -> str:
    full = next(row for row in methods if row["method"] == "full")
    lines = [
        "| method | trainable params | tokens/s | peak RSS (MB) | RSS vs full | time vs full |",
        "|---|---|---|---|---|---|",
    ]
    for row in methods:
        lines.append(
            f"| {row['method']} | {row['trainable']:,} | {row['tokens_per_s']:.0f} | "
            f"{row['peak_rss_mb']:.0f} | {row['peak_rss_mb'] / full['peak_rss_mb']:.0%} | "
            f"{row['seconds'] / full['seconds']:.0%} |"
        )
    lines += ["", "| approved (N) | train / holdout | steps | training (s) | approved → "
              "decided (s) | base+retrieval | + adapter | probes | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in runs:
        lines.append(
            f"| {run.size} ({run.approved} approved) | {run.train} / {run.holdout} | "
            f"{run.steps} | {run.train_s:.0f} | {run.total_s:.0f} | {run.base_accuracy:.1%} | "
            f"{run.candidate_accuracy:.1%} | {run.probes_change:+.2f} | {run.state} |"
        )
    if runs and bare is not None:
        last = runs[-1]
        accuracies = f"| {bare:.1%} | {last.base_accuracy:.1%} | {last.candidate_accuracy:.1%} |"
        lines += ["", f"Holdout accuracy on the N={last.size} run's frozen holdout "
                  f"({last.holdout} questions):", "",
                  "| base | base + retrieval | base + retrieval + adapter |", "|---|---|---|",
                  accuracies]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="Steps per method in table 1.")
    parser.add_argument("--sizes", default="50,200", help="N approved examples for table 2.")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.steps, args.examples)))
        return
    from retrieval.embeddings import Embedder

    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        work = Path(tmp)
        methods = compare_methods(grounded_examples(work / "grounding"), args.steps, work)
        data_dir = work / "serve"
        data_dir.mkdir()
        sizes = [int(size) for size in args.sizes.split(",") if size]
        process, gateway, engine = start_server(data_dir, [f"cycles-n{n}" for n in sizes])
        embedder = Embedder()
        try:
            runs = [asyncio.run(time_to_candidate(size, gateway, engine, data_dir,
                                                  embedder.embed)) for size in sizes]  # fmt: skip
            bare = (
                asyncio.run(without_retrieval(runs[-1], engine, embedder.embed)) if runs else None
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    body = tables(methods, runs, bare)
    print(body)
    header = (f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine_description()}; "
              f"{args.steps} steps of 4 grounded demo examples per method in its own process "
              "(the 8-bit optimizers need CUDA, so AdamW everywhere); N runs through a real "
              "`loragate serve` with vLLM CPU, 2 epochs, near-duplicate threshold 0.99 "
              "(the N=200 set repeats each demo question in three phrasings).")  # fmt: skip
    if not args.no_write:
        write_section(SECTION, f"{SECTION}\n\n{header}\n\n{body}\n")
    for run in runs:
        print(json.dumps({key: value for key, value in asdict(run).items() if key != "report"}))


if __name__ == "__main__":
    main()
