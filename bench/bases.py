"""Base-model selection on the demo domain: the sample-efficiency table of `loragate eval bases`.

A real `loragate serve` (vLLM CPU) serves the embedded base; demo users ask N grounded
questions of an alias, rate the answers and correct the wrong ones, and an operator approves
every flag (as in bench/trainer.py). Then the base selector runs with two candidates that are
the one embedded server under two labels (this machine has one base; on GPUs each candidate
is its own server): the base alone on the alias's holdout, then QLoRA on 25%, 50% and 100% of
the curated training examples, each scored on the same holdout through vLLM.

    .venv/bin/python bench/bases.py [--size 50] [--target 0.5] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_description, write_section
from bench.trainer import MODEL_DIR, approve_demo_examples, start_server

SECTION = "## Base-model selection"
ALIAS = "bases-demo"


async def select(data_dir: Path, engine: str, target: float) -> dict[str, Any]:
    from core.settings import load_settings
    from gateway.wiring import trainer_parts
    from trainer.bases import BaseSelector, Candidate
    from trainer.demo import COLLECTION

    settings = load_settings(
        data_dir=data_dir, engine_mode="external", engine_urls=engine, base_model_path=MODEL_DIR,
        train_near_duplicate_similarity=0.99, log_level="WARNING",
        retrieval_models={ALIAS: {"collection": COLLECTION, "top_k": 2}},  # as start_server
    )  # fmt: skip
    candidates = [Candidate("smollm2-a", engine), Candidate("smollm2-b", engine)]
    async with trainer_parts(settings) as parts:
        selector = BaseSelector(parts.job, parts.reevaluator.store, parts.reevaluator.regrounder)
        report: dict[str, Any] = await selector.run(ALIAS, candidates, target)
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=50, help="Approved examples.")
    parser.add_argument("--target", type=float, default=0.5, help="Holdout accuracy to reach.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from retrieval.embeddings import Embedder
    from trainer.bases import format_table

    with tempfile.TemporaryDirectory(prefix="bench-bases-") as tmp:
        data_dir = Path(tmp)
        process, gateway, engine = start_server(data_dir, [ALIAS])
        try:
            approved = asyncio.run(
                approve_demo_examples(gateway, ALIAS, args.size, Embedder().embed)
            )
            report = asyncio.run(select(data_dir, engine, args.target))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    table = format_table(report)
    print(table)
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine_description()} · "
        f"`python bench/bases.py --size {args.size} --target {args.target}`: {approved} approved "
        f"demo examples ({report['training_examples']} to train on, {report['holdout']} held "
        "out, grounded in the demo collection); both candidates are the embedded "
        "SmolLM2-135M-Instruct server under two labels, so their rows differ only by "
        "nondeterminism. Holdout accuracy by number of training examples (`base`: none)."
    )
    if not args.no_write:
        write_section(SECTION, f"{SECTION}\n\n{header}\n\n```\n{table}\n```\n")


if __name__ == "__main__":
    main()
