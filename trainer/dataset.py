"""Curation: approved review items become a scrubbed, de-duplicated, split dataset snapshot.

An example is the conversation exactly as it was served (grounding system message included,
so the model trains as it serves) plus the reply to learn: the correction, or the answer as
served when an operator approved it as good.

The split is deterministic, stratified by flag reason, made of whole facts (the examples
whose replies state one fact, ``trainer/facts.py``: no fact is both trained on and held out),
and remembered in the store: an example that entered an alias's holdout stays there, with the
text it had then, and never reaches training; an example that was trained on never enters the
holdout (the live version would be scored on what it learnt). Only facts new to the split top
each stratum's holdout up to the holdout fraction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.sections import CurationLimits
from retrieval.grounding import asked_question
from trainer.errors import DatasetError, SnapshotCorrupt
from trainer.facts import fact_groups
from trainer.pii import ScrubReport, scrub, scrub_message

SPLITS = ("train", "validation", "holdout")
MANIFEST = "manifest.json"

# Counts an example's tokens as the model would see it (prompt, tools and reply).
TokenCounter = Callable[["Example"], int]
# Embeds texts as unit vectors (rows), for near-duplicate detection.
EmbedTexts = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Example:
    id: str  # the completion id it came from
    alias: str
    messages: list[dict[str, Any]]  # the prompt as served, without the reply
    reply: str
    origin: str  # "correction" or "approved_answer"
    stratum: str  # the first flag reason
    # The request's tool definitions, rendered into the prompt as vLLM rendered them.
    tools: list[dict[str, Any]] | None = None
    # An approved answer that called tools: the calls to learn, as the engine returned them.
    reply_tool_calls: list[dict[str, Any]] | None = None

    @property
    def question(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return asked_question(str(message.get("content") or ""))
        return ""

    @property
    def reply_text(self) -> str:
        """The reply as text, tool calls included, for comparing examples and answers."""
        return with_tool_calls(self.reply, self.reply_tool_calls)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Example:
        # Snapshots written before a field existed lack it; the dataclass default holds.
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def with_tool_calls(text: str, calls: Sequence[dict[str, Any]] | None) -> str:
    """``text`` followed by one ``name(arguments)`` line per tool call: the calls compared
    without the ids the engine draws anew each time, arguments in a canonical order."""
    lines = [text] if text else []
    for call in calls or []:
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        with contextlib.suppress(TypeError, ValueError):  # not JSON: compared as written
            arguments = json.dumps(json.loads(arguments), sort_keys=True)
        lines.append(f"{function.get('name')}({arguments})")
    return "\n".join(lines)


@dataclass
class Curated:
    train: list[Example]
    validation: list[Example]
    holdout: list[Example]
    new_holdout: list[Example]  # to be frozen into the store with this snapshot
    new_trained: list[Example] = field(default_factory=list)  # first used for training now
    dropped: Counter[str] = field(default_factory=Counter)
    pii: Counter[str] = field(default_factory=Counter)


def scrub_example(example: Example, report: ScrubReport) -> Example:
    """Every string of every message (content as text or parts, names, tool calls and
    their arguments) and the reply, scrubbed."""
    messages = [scrub_message(message, report) for message in example.messages]
    calls = example.reply_tool_calls
    if calls:
        calls = scrub_message({"role": "assistant", "tool_calls": calls}, report)["tool_calls"]
    return replace(
        example, messages=messages, reply=scrub(example.reply, report), reply_tool_calls=calls
    )


def curate(
    candidates: Sequence[Example],
    frozen_holdout: Sequence[Example],
    limits: CurationLimits,
    count_tokens: TokenCounter,
    embed: EmbedTexts | None = None,
    trained: Collection[str] = (),
) -> Curated:
    """Scrub, filter, de-duplicate and split. Raises DatasetError when nothing is left.

    ``frozen_holdout`` and ``trained`` are the split so far: they keep their sides.
    """
    if not candidates and not frozen_holdout:
        raise DatasetError("no approved examples: approve flagged conversations first")
    report, dropped = ScrubReport(), Counter[str]()
    pool = _clean_pool(candidates, frozen_holdout, limits, count_tokens, embed, report, dropped)
    if not pool and candidates:
        reasons = ", ".join(f"{count} {reason}" for reason, count in dropped.items())
        raise DatasetError(f"all {len(candidates)} examples were dropped ({reasons})")
    facts = _facts([*frozen_holdout, *pool], embed)
    new_holdout, trainable = _split_holdout(
        pool, frozen_holdout, limits.holdout_fraction, set(trained), facts
    )
    train, validation = _split_validation(trainable, limits.validation_fraction)
    new_trained = [example for example in trainable if example.id not in set(trained)]
    if len(train) + len(validation) < limits.min_train_examples:
        drops = "".join(f", {count} {reason}" for reason, count in dropped.items())
        raise DatasetError(
            f"only {len(train) + len(validation)} training examples after the holdout split "
            f"({len(candidates)} approved{drops}); at least {limits.min_train_examples} are "
            "needed: approve more flagged conversations"
        )
    return Curated(
        train,
        validation,
        [*frozen_holdout, *new_holdout],
        new_holdout,
        new_trained=new_trained,
        dropped=dropped,
        pii=report.counts,
    )


def grow_holdout(
    candidates: Sequence[Example],
    frozen_holdout: Sequence[Example],
    limits: CurationLimits,
    count_tokens: TokenCounter,
    embed: EmbedTexts | None = None,
    trained: Collection[str] = (),
) -> list[Example]:
    """The examples new to the split that join the holdout now, exactly as ``curate`` would
    pick them (scrubbed, filtered, same fraction and order); the rest stay unassigned for the
    next training run. Lets the scheduled re-evaluation score on newly reviewed data."""
    report, dropped = ScrubReport(), Counter[str]()
    pool = _clean_pool(candidates, frozen_holdout, limits, count_tokens, embed, report, dropped)
    facts = _facts([*frozen_holdout, *pool], embed)
    new_holdout, _ = _split_holdout(
        pool, frozen_holdout, limits.holdout_fraction, set(trained), facts
    )
    return new_holdout


def _clean_pool(
    candidates: Sequence[Example],
    frozen_holdout: Sequence[Example],
    limits: CurationLimits,
    count_tokens: TokenCounter,
    embed: EmbedTexts | None,
    report: ScrubReport,
    dropped: Counter[str],
) -> list[Example]:
    """Candidates not yet in the holdout, PII-scrubbed, without over-long examples and
    (near) duplicates of each other or of the holdout."""
    frozen_ids = {example.id for example in frozen_holdout}
    pool = [
        scrub_example(example, report) for example in candidates if example.id not in frozen_ids
    ]
    pool = _drop_too_long(pool, limits, count_tokens, dropped)
    pool = _drop_exact_duplicates(pool, frozen_holdout, dropped)
    if embed is not None:
        pool = _drop_near_duplicates(pool, frozen_holdout, embed, limits, dropped)
    return pool


def _drop_too_long(
    pool: list[Example], limits: CurationLimits, count_tokens: TokenCounter, dropped: Counter[str]
) -> list[Example]:
    kept = []
    for example in pool:
        if len(example.reply) > limits.max_reply_chars:
            dropped["reply_too_long"] += 1
        elif count_tokens(example) > limits.max_example_tokens:
            dropped["over_context"] += 1
        else:
            kept.append(example)
    return kept


def _dedup_key(example: Example) -> str:
    question, reply = (
        " ".join(text.lower().split()) for text in (example.question, example.reply_text)
    )
    text = question + "\x00" + reply
    return hashlib.sha256(text.encode()).hexdigest()


def _drop_exact_duplicates(
    pool: list[Example], frozen_holdout: Sequence[Example], dropped: Counter[str]
) -> list[Example]:
    seen = {_dedup_key(example) for example in frozen_holdout}
    kept = []
    for example in pool:
        key = _dedup_key(example)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        kept.append(example)
    return kept


def _drop_near_duplicates(
    pool: list[Example],
    frozen_holdout: Sequence[Example],
    embed: EmbedTexts,
    limits: CurationLimits,
    dropped: Counter[str],
) -> list[Example]:
    """Greedy: keep an example unless it is near one already kept (or frozen)."""
    if not pool:
        return pool
    texts = [f"{example.question}\n{example.reply_text}" for example in [*frozen_holdout, *pool]]
    vectors = embed(texts)
    kept_rows = list(range(len(frozen_holdout)))
    kept = []
    for offset, example in enumerate(pool):
        row = len(frozen_holdout) + offset
        if kept_rows and float(np.max(vectors[kept_rows] @ vectors[row])) >= (
            limits.near_duplicate_similarity
        ):
            dropped["near_duplicate"] += 1
            continue
        kept_rows.append(row)
        kept.append(example)
    return kept


@dataclass(frozen=True)
class _Facts:
    """Example id to the fact its reply states (trainer/facts.py), and the reply's vector."""

    group: dict[str, int]
    vectors: dict[str, np.ndarray] | None

    def nearest(self, example: Example, among: Iterable[Example]) -> Example | None:
        """The member of ``among`` whose reply is most like ``example``'s."""
        if self.vectors is None:
            return None
        vector = self.vectors[example.id]
        vectors = self.vectors
        return max(among, key=lambda other: float(vectors[other.id] @ vector), default=None)


def _facts(examples: Sequence[Example], embed: EmbedTexts | None) -> _Facts:
    replies = [example.reply_text for example in examples]
    vectors = embed(replies) if embed is not None and replies else None
    groups = fact_groups(replies, vectors)
    ids = [example.id for example in examples]
    return _Facts(
        dict(zip(ids, groups, strict=True)),
        None if vectors is None else dict(zip(ids, vectors, strict=True)),
    )


def _rank(example: Example) -> str:
    return hashlib.sha256(example.id.encode()).hexdigest()


def _split_holdout(
    pool: list[Example],
    frozen_holdout: Sequence[Example],
    fraction: float,
    trained: set[str],
    facts: _Facts,
) -> tuple[list[Example], list[Example]]:
    """Top every stratum's holdout up to ``fraction`` of it with whole facts new to the split
    (``facts``: trainer/facts.py), in a stable hash order. Examples trained on before stay in
    training; a new example of a fact already held out joins the holdout, one of a fact
    trained on joins training: no fact is on both sides."""
    group = facts.group
    held_facts = {group[example.id] for example in frozen_holdout}
    trained_before = [example for example in pool if example.id in trained]
    trained_facts = {group[example.id] for example in trained_before}
    holdout: list[Example] = []
    train: list[Example] = []
    free: dict[int, list[Example]] = {}
    for example in sorted(pool, key=_rank):
        fact = group[example.id]
        if fact in held_facts and fact in trained_facts and example.id not in trained:
            side = _held_side(example, facts, frozen_holdout, trained_before)
            (holdout if side else train).append(example)
        elif example.id in trained or fact in trained_facts:
            train.append(example)
        elif fact in held_facts:
            holdout.append(example)
        else:
            free.setdefault(fact, []).append(example)
    by_stratum: dict[str, list[list[Example]]] = {}
    for fact_examples in free.values():  # in the hash order of each fact's first example
        by_stratum.setdefault(fact_examples[0].stratum, []).append(fact_examples)
    held = Counter(example.stratum for example in [*frozen_holdout, *holdout])
    totals = Counter(example.stratum for example in [*frozen_holdout, *pool])
    trainable = Counter(example.stratum for example in train)
    for stratum, stratum_facts in sorted(by_stratum.items()):
        target = math.floor(fraction * totals[stratum] + 0.5)
        for index, fact_examples in enumerate(stratum_facts):
            # A stratum keeps at least one fact to train on.
            last_to_train = trainable[stratum] == 0 and index == len(stratum_facts) - 1
            if held[stratum] < target and not last_to_train:
                holdout.extend(fact_examples)
                held[stratum] += len(fact_examples)
            else:
                train.extend(fact_examples)
                trainable[stratum] += len(fact_examples)
    return holdout, train


def _held_side(
    example: Example, facts: _Facts, held: Sequence[Example], trained: Sequence[Example]
) -> bool:
    """Whether a new example belongs with the holdout, when its group holds examples of both
    sides: grouping is transitive, and one reply like two facts (the company's name in both)
    can join a held-out fact to a trained one that the split kept apart before. The example
    goes to the side of the already-split reply most like its own (seen: "The Sabrask Goods
    mobile app is called Thuses" grouped with a held-out mascot and a trained "The app is
    called Thuses."). Without vectors (groups of equal replies), training: the holdout then
    gains no item that training has seen."""
    fact = facts.group[example.id]
    members = [other for other in [*held, *trained] if facts.group[other.id] == fact]
    nearest = facts.nearest(example, members)
    return nearest is not None and nearest.id in {other.id for other in held}


def _split_validation(
    examples: list[Example], fraction: float
) -> tuple[list[Example], list[Example]]:
    """Examples, not whole facts: a validation example is most often another wording of a
    fact trained on, which is what early stopping should watch (the fact learnt, not one
    wording of it); the holdout, split by fact, judges the rest."""
    ordered = sorted(examples, key=lambda example: _rank(example)[::-1])
    count = math.floor(fraction * len(ordered)) if len(ordered) >= 10 else 0
    return ordered[count:], ordered[:count]


# -- snapshots ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    path: Path
    manifest: dict[str, Any]

    def examples(self, split: str) -> list[Example]:
        return [
            Example.from_json(json.loads(line)) for line in _lines(self.path / f"{split}.jsonl")
        ]


def write_snapshot(root: Path, alias: str, curated: Curated, extra: dict[str, Any]) -> Snapshot:
    """Write the three splits and a manifest (hashes, counts) into a new directory, atomically.
    Each split is written in the order of its ids: the same examples give the same hash, which
    names the run's work directory, so a crashed run resumes. (The holdout came in another
    order once its new items had been frozen, and the resumed run started from step 0.)"""
    splits = {
        "train": sorted(curated.train, key=_by_id),
        "validation": sorted(curated.validation, key=_by_id),
        "holdout": sorted(curated.holdout, key=_by_id),
    }
    payloads = {
        name: "".join(json.dumps(example.to_json(), sort_keys=True) + "\n" for example in rows)
        for name, rows in splits.items()
    }
    digest = hashlib.sha256("".join(payloads.values()).encode()).hexdigest()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = root / alias / f"{stamp}-{digest[:10]}"
    staging = root / alias / f".{target.name}.tmp-{uuid.uuid4().hex[:6]}"
    staging.mkdir(parents=True)
    manifest = {
        "alias": alias,
        "created_at": datetime.now(UTC).isoformat(),
        "sha256": digest,
        "counts": {name: len(rows) for name, rows in splits.items()},
        "files": {
            f"{name}.jsonl": hashlib.sha256(payload.encode()).hexdigest()
            for name, payload in payloads.items()
        },
        "dropped": dict(curated.dropped),
        "pii_replaced": dict(curated.pii),
        "new_holdout": len(curated.new_holdout),
        "strata": dict(Counter(example.stratum for example in curated.train)),
        **extra,
    }
    try:
        for name, payload in payloads.items():
            _write_synced(staging / f"{name}.jsonl", payload)
        _write_synced(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        # The same dataset twice in one second (a run that failed at once, then its retry)
        # gets a name of its own rather than an error.
        while target.exists():
            target = target.with_name(f"{target.name}-{uuid.uuid4().hex[:4]}")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Snapshot(target, manifest)


def _by_id(example: Example) -> str:
    return example.id


def read_snapshot(path: Path) -> Snapshot:
    """Open a snapshot, checking every file against the manifest's hashes."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotCorrupt(f"snapshot {path} has no readable manifest: {exc}") from None
    for name, expected in files.items():
        try:
            actual = hashlib.sha256((path / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise SnapshotCorrupt(f"snapshot {path}: cannot read {name}: {exc}") from None
        if actual != expected:
            raise SnapshotCorrupt(f"snapshot {path}: {name} does not match its manifest hash")
    snapshot = Snapshot(path, manifest)
    try:
        for split in SPLITS:
            snapshot.examples(split)
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotCorrupt(f"snapshot {path}: a record cannot be read: {exc}") from None
    return snapshot


def read_examples(path: Path) -> list[Example]:
    return [Example.from_json(json.loads(line)) for line in _lines(path)]


def write_examples(path: Path, examples: Sequence[Example]) -> None:
    """A run's derived examples (rehearsal, the recipe's), whole or absent: a crash mid-write
    leaves nothing, and the resumed run makes them again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text("".join(json.dumps(example.to_json()) + "\n" for example in examples))
    partial.replace(path)


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _lines(path: Path) -> Iterable[str]:
    with path.open(encoding="utf-8") as handle:
        yield from (line for line in handle if line.strip())
