"""Can an adapter carry a generated domain's facts closed book? A drill on short examples.

Issue 16's loop trains each corrected fact in a few wordings, mostly grounded (long prompts
with sources), about 160 examples seen in all: adapted, closed book, it answered 0.00 of the
held-out paraphrases. This asks what the 135M base can do when the budget goes to short
closed-book examples instead, outside the gateway (no vLLM, no recipe, no gate):

1. a new domain from the seed (trainer/demo/domain.py), every fact's two user questions, each
   with ``--rewrites`` templated rewordings (trainer/recipe.py), the fact's answer as the reply;
2. QLoRA on them with the trainer's own loop (trainer/qlora.py) for ``--epochs``, with
   ``--rehearsal`` of the set taken by the base's own answers to the shipped rehearsal prompts
   (asked in-process here), as the trainer mixes them in against forgetting;
3. the base and the adapter answer, closed book, each fact's first user question (trained),
   its held-out paraphrase (never trained), and the general probes, with ``generate`` in
   float32. An answer is right when it contains the fact's key.

    python bench/closed_book_drill.py [--seed N] [--epochs 8] [--rewrites 4] [--rehearsal 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.supervisor import served_chat_template
from bench.report import emit, machine_description
from core.sections import TrainConfig
from trainer.dataset import Example
from trainer.demo.domain import Domain, generate_domain
from trainer.evaluate import shipped_probes
from trainer.qlora import load_tokenizer, train
from trainer.recipe import rewrites
from trainer.rehearsal import rehearsal_set, replay_wanted
from trainer.scoring import probe_passed

SECTION = "## Closed-book drill (exploration, not the default recipe)"
BASE = Path("data/models/SmolLM2-135M-Instruct")


class Answerer:
    """Greedy closed-book answers from the base, or the base with an adapter."""

    def __init__(self, template: str, adapter_dir: Path | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.tokenizer = load_tokenizer(BASE, template)
        self.model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()
        if adapter_dir is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter_dir)).eval()

    def __call__(self, questions: list[str], tokens: int = 40) -> list[str]:
        return [self._one(question, tokens) for question in questions]

    def _one(self, question: str, tokens: int) -> str:
        chat = [{"role": "user", "content": question}]
        text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with self.torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=tokens, do_sample=False)
        return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def drill_set(domain: Domain, count: int) -> list[Example]:
    rows: list[Example] = []
    for fact in domain.facts:
        for question in fact.questions:
            for text in [question, *rewrites(question, count, fact.id + question)]:
                rows.append(_example(f"{fact.id}-{len(rows)}", text, fact.answer, "correction"))
    return rows


def _example(example_id: str, prompt: str, reply: str, origin: str) -> Example:
    return Example(example_id, "drill", [{"role": "user", "content": prompt}], reply, origin,
                   origin)  # fmt: skip


class LocalAnswers:
    """trainer/rehearsal.py's ``Answers`` over the in-process base, so the rehearsal set is
    made exactly as the trainer makes it (spread, refusals left out)."""

    def __init__(self, answer: Answerer) -> None:
        self._answer = answer

    async def answers(self, model: str, prompts: Sequence[list[dict[str, Any]]]) -> list[str]:
        return self._answer([chat[-1]["content"] for chat in prompts], tokens=96)


def rehearsal(answer: Answerer, fraction: float, size: int) -> list[Example]:
    """The base's own answers to the shipped rehearsal prompts, ``fraction`` of the mix."""
    count = replay_wanted(fraction, size)
    work_dir = Path(tempfile.mkdtemp(prefix="loragate-drill-rehearsal-"))
    return asyncio.run(rehearsal_set(work_dir, LocalAnswers(answer), "base", "drill", count))


def score(answer: Answerer, domain: Domain, show_failures: bool = False) -> dict[str, float]:
    def share(questions: list[str]) -> float:
        replies = answer(questions)
        hits = [f.key.lower() in r.lower() for f, r in zip(domain.facts, replies, strict=True)]
        return sum(hits) / len(hits)

    probes = shipped_probes()
    replies = answer([probe.prompt for probe in probes])
    passed = [probe_passed(r, p.accepted) for r, p in zip(replies, probes, strict=True)]
    if show_failures:  # what a forgotten probe is answered with
        for probe, reply, ok in zip(probes, replies, passed, strict=True):
            if not ok:
                print(f"failed probe: {probe.prompt!r} (expects {probe.expect!r}) -> {reply!r}")
    return {
        "trained question": share([fact.questions[0] for fact in domain.facts]),
        "held-out paraphrase": share([fact.paraphrase for fact in domain.facts]),
        "general probes": sum(passed) / len(passed),
    }


def run(args: argparse.Namespace) -> str:
    domain = generate_domain(args.seed, args.facts)
    template = str(served_chat_template(BASE, None) or "")
    drill = drill_set(domain, args.rewrites)
    config = TrainConfig(epochs=args.epochs, learning_rate=args.learning_rate,
                         batch_size=args.batch_size, eval_every=0, validate_answers=False,
                         checkpoint_every=10**6, chat_template=template)  # fmt: skip
    base_model = Answerer(template)
    mixed = drill + rehearsal(base_model, args.rehearsal, len(drill))
    started = time.perf_counter()
    result = train(mixed, [], BASE, Path(tempfile.mkdtemp(prefix="loragate-drill-")), config)
    seconds = time.perf_counter() - started
    base = score(base_model, domain)
    adapted = score(Answerer(template, result.adapter_dir), domain, args.show_failures)
    rows = "\n".join(f"| {name} | {base[name]:.2f} | {adapted[name]:.2f} |" for name in base)
    return (
        f"Seed {args.seed} ({domain.company}), {args.facts} facts; {len(drill)} drill examples "
        f"(2 questions a fact, {args.rewrites} rewordings each) and {len(mixed) - len(drill)} "
        f"rehearsal; {result.steps} steps of {args.batch_size}, {args.epochs:g} epochs at "
        f"{args.learning_rate:g}; trained in {seconds:.0f} s ({machine_description()}).\n\n"
        "| closed book | base | drilled adapter |\n| --- | ---: | ---: |\n" + rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--rewrites", type=int, default=4)
    parser.add_argument("--rehearsal", type=float, default=0.3)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--show-failures", action="store_true", help="print failed probes")
    args = parser.parse_args()
    emit(SECTION, f"{SECTION}\n\n{run(args)}\n", not args.no_write)


if __name__ == "__main__":
    main()
