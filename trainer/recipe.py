"""The training recipe: each approved correction becomes several examples.

A fact that a small model has seen in one wording is rarely recalled from another, and an
adapter trained only on conversations as they were served learns one wording with one set
of sources. So every training example is expanded (docs/training.md, "The recipe"):

* **Wordings.** The question as asked, ``rewrites`` templated rewordings of it (a different
  opening, a request for brevity, a shared set of everyday synonyms), and up to
  ``paraphrases`` rewordings asked of the live model. A model paraphrase is kept only when it
  is a question, differs from the original and keeps every name and number of it: a
  paraphrase must never lose the fact. (The 135M base rarely writes one that passes; larger
  bases do.)
* **Closed book.** For an alias without retrieval, every wording with the reply alone, so
  that the adapter carries the fact itself. For an alias with retrieval, only the first
  ``closed_book`` wordings (0 by default: paired on three generated domains, closed-book
  copies beside the grounded ones lowered held-out paraphrases with retrieval from 0.65 to
  0.52 and recalled nothing closed book; docs/training.md).
* **Grounded, in the spirit of RAFT** (Zhang et al., 2024: retrieval-augmented fine-tuning).
  When the alias answers with retrieval, each wording is grounded afresh in the alias's
  collection, exactly as the gateway would serve it, right sources and distractors alike.
  The target cites the source that supports the reply best (``[n]``) when one does; when
  retrieval missed, the target is the reply from memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from core.sections import RecipeConfig
from retrieval.grounding import lexical_support, sources_in, strip_grounding
from trainer.dataset import Example

# Grounds a conversation as the alias would serve it now (trainer/reeval.py's Regrounder).
Ground = Callable[[str, Example], Awaitable[Example]]
# Asks the live model for one answer per prompt.
Ask = Callable[[Sequence[str]], Awaitable[list[str]]]

RECIPE_FILE = "recipe.jsonl"  # the expanded set, kept in the run's work directory
CITE_MIN_SUPPORT = 0.5  # lexical support of the reply in a source to cite it
_CITATION = re.compile(r"\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")
# Names and numbers; "I" and its contractions are capitalised but name nothing.
_KEEP = re.compile(r"\b(?!I\b|I'[a-z]+\b)(?:[A-Z][\w'-]*|\d[\d.,:]*)")
TRAINING_OPENINGS = (
    "{q}",
    "Quick question: {q}",
    "Hi! {q}",
    "Can you help me? {q}",
    "I'd like to know something. {q}",
    "{q} Please keep it short.",
    "{q} Thanks!",
)
# Everyday words of support questions, each with a plain substitute; applied to every alias.
_SYNONYMS = (
    ("how much does", "what does"), ("how long", "for how long"), ("what is", "what's"),
    ("do i", "can I"), ("cost", "price"), ("buy", "purchase"), ("shop", "store"),
    ("store", "shop"), ("get", "receive"), ("fee", "charge"), ("return", "send back"),
    ("free", "at no cost"), ("when", "at what point"), ("where", "in which place"),
)  # fmt: skip
PARAPHRASE_PROMPT = (
    "Rewrite this question with different words. Keep every name and number. Reply with "
    "the new question only.\n\nQuestion: {q}"
)


@dataclass
class Expansion:
    examples: list[Example]
    paraphrases_asked: int = 0
    paraphrases_kept: int = 0
    grounded: int = 0
    cited: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "examples": len(self.examples),
            "grounded": self.grounded,
            "cited": self.cited,
            "paraphrases_asked": self.paraphrases_asked,
            "paraphrases_kept": self.paraphrases_kept,
        }


async def expand(
    examples: Sequence[Example],
    config: RecipeConfig,
    ground: Ground | None,
    ask: Ask | None,
) -> Expansion:
    """The training set of the recipe for ``examples`` (rehearsal is added elsewhere)."""
    out = Expansion([])
    wordings = await _wordings(examples, config, ask, out)
    for example in examples:
        reply = _CITATION.sub("", example.reply).strip()
        for number, question in enumerate(wordings[example.id]):
            closed = replace(
                with_question(example, question, f"{example.id}~c{number}"), reply=reply
            )
            if number < config.closed_book or ground is None:
                out.examples.append(closed)
            if ground is not None:
                out.examples.append(await _grounded(closed, reply, ground, out))
    return out


async def as_trained(examples: Sequence[Example], ground: Ground | None) -> list[Example]:
    """Each example in its own wording, as the recipe trains it: grounded afresh with the
    source that states its reply, which the reply cites (closed book for an alias without
    retrieval). For the validation split that early stopping watches: a turn as served
    whose retrieval missed asks for a fact its sources do not hold, which no adapter learns
    to answer, and a choice made on it is noise."""
    own_wording = RecipeConfig(rewrites=0, paraphrases=0)
    return (await expand(examples, own_wording, ground, None)).examples


async def _wordings(
    examples: Sequence[Example], config: RecipeConfig, ask: Ask | None, out: Expansion
) -> dict[str, list[str]]:
    wordings = {
        example.id: [example.question, *rewrites(example.question, config.rewrites, example.id)]
        for example in examples
    }
    if ask is None or config.paraphrases <= 0:
        return wordings
    asked = [example for example in examples for _ in range(config.paraphrases)]
    answers = await asked_paraphrases([example.question for example in asked], ask)
    out.paraphrases_asked = len(asked)
    for example, candidate in zip(asked, answers, strict=True):
        if keeps_the_fact(example.question, candidate, wordings[example.id]):
            wordings[example.id].append(candidate)
            out.paraphrases_kept += 1
    return wordings


async def asked_paraphrases(questions: Sequence[str], ask: Ask) -> list[str]:
    """The model's rewording of each question, unquoted; ``keeps_the_fact`` decides whether
    one may be used."""
    answers = await ask([PARAPHRASE_PROMPT.format(q=question) for question in questions])
    return [answer.strip().strip('"').strip() for answer in answers]


def rewrites(
    question: str, count: int, key: str, openings: Sequence[str] = TRAINING_OPENINGS
) -> list[str]:
    """``count`` templated rewordings, chosen in a stable order from ``key``."""
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    found: list[str] = []
    for step in range(len(openings) * 2):
        if len(found) >= count:
            break
        opening = openings[(seed + step) % len(openings)]
        body = _swap_synonym(question, seed + step) if step % 2 == 0 else question
        candidate = opening.format(q=body)
        if candidate != question and candidate not in found:
            found.append(candidate)
    return found


def keeps_the_fact(original: str, candidate: str, seen: Sequence[str]) -> bool:
    """A model paraphrase is usable: a single question, new, with every name and number of
    the original, and no number the original lacks (an invented answer)."""
    if not candidate.endswith("?") or "\n" in candidate or len(candidate) > 3 * len(original):
        return False
    if candidate.lower() in {text.lower() for text in seen}:
        return False
    # Names and numbers, less the capital of the opening word ("How", "What").
    wanted = {token.lower() for token in _KEEP.findall(original.split(" ", 1)[-1])}
    words = _lower_words(candidate)
    invented = {token for token in _KEEP.findall(candidate) if token[0].isdigit()} - wanted
    return wanted <= words and not invented


def cite(reply: str, sources: Sequence[str]) -> tuple[str, bool]:
    """The reply citing the source that supports it best, when one supports it enough.

    The marker goes before the final full stop; with a single source, first, as
    ``Source [1]: ...``. At the end, the marker is what a small adapter reaches for when it
    is unsure of the next word, and it ends the answer there ("The mobile app is [1].").
    Among several sources, committing to one first made the 135M adapter copy it whether it
    answered or not, so the marker opens the answer only where there is nothing to choose.
    A bare ``[1] `` opening could still be the whole answer ("[1]" and nothing after it,
    seen on one seed), and on six paired seeds it lost more general probes: two of six
    candidates were refused for it (-0.08, -0.09), none of six with ``Source [1]: ``.
    """
    if not sources:
        return reply, False
    support = [lexical_support(reply, [text]) for text in sources]
    best = max(range(len(sources)), key=lambda index: support[index])
    if support[best] < CITE_MIN_SUPPORT:
        return reply, False
    if len(sources) == 1:
        return f"Source [1]: {reply}", True
    marker = f" [{best + 1}]"
    if reply.endswith((".", "!", "?")):
        return reply[:-1] + marker + reply[-1], True
    return reply + marker, True


async def _grounded(example: Example, reply: str, ground: Ground, out: Expansion) -> Example:
    served = await ground(example.alias, example)
    out.grounded += 1
    sources = sources_in(str(served.messages[-1].get("content") or "")) if served.messages else []
    target, cited = cite(reply, sources)
    out.cited += cited
    return replace(served, id=example.id.replace("~c", "~g"), reply=target)


def with_question(example: Example, question: str, new_id: str) -> Example:
    """The example's conversation, ungrounded, with its last user turn reworded."""
    messages = strip_grounding(example.messages)
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            messages[index] = {**messages[index], "content": question}
            break
    return replace(example, id=new_id, messages=messages)


def _swap_synonym(question: str, seed: int) -> str:
    lowered = question.lower()
    present = [pair for pair in _SYNONYMS if re.search(rf"\b{re.escape(pair[0])}\b", lowered)]
    if not present:
        return question
    word, substitute = present[seed % len(present)]
    swapped = re.sub(rf"\b{re.escape(word)}\b", substitute, question, count=1, flags=re.I)
    return swapped[0].upper() + swapped[1:]


def _lower_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))
