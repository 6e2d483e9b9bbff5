"""Curation (scrub, filter, de-duplicate, split) and dataset snapshots."""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from trainer.dataset import (
    MANIFEST,
    Curated,
    CurationLimits,
    Example,
    curate,
    grow_holdout,
    read_snapshot,
    write_snapshot,
)
from trainer.errors import DatasetError, SnapshotCorrupt

# The split counts below are worked out for a fifth in the holdout.
LIMITS = CurationLimits(min_train_examples=1, holdout_fraction=0.2)


def count_tokens(example: Example) -> int:
    words = [example.reply, *(str(message["content"]) for message in example.messages)]
    return sum(len(text.split()) for text in words)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Bag-of-words hashed into 512 buckets, rows normalized to unit length."""
    vectors = np.zeros((len(texts), 512))
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            vectors[row, zlib.crc32(word.encode()) % 512] += 1.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def ex(
    number: int,
    stratum: str = "correction",
    *,
    question: str | None = None,
    reply: str | None = None,
) -> Example:
    return Example(
        id=f"c{number:03d}",
        alias="support",
        messages=[
            {"role": "system", "content": "Answer from the sources."},
            {"role": "user", "content": question or f"question {number} about topic{number}"},
        ],
        reply=reply or f"reply {number} says value{number * 3}",
        origin="correction",
        stratum=stratum,
    )


def ids(examples: Sequence[Example]) -> list[str]:
    return sorted(example.id for example in examples)


# -- errors ---------------------------------------------------------------------------------
def test_no_examples_at_all_is_an_error() -> None:
    with pytest.raises(DatasetError, match="no approved examples"):
        curate([], [], LIMITS, count_tokens)


def test_all_dropped_is_an_error_naming_the_drops() -> None:
    frozen = [ex(1, question="How long do refunds take?", reply="Five business days.")]
    candidates = [
        ex(2, question="How long do refunds take?", reply="Five business days."),
        ex(3, question="how long do REFUNDS   take?", reply="five business days."),
    ]
    with pytest.raises(DatasetError, match=r"all 2 examples were dropped \(2 duplicate\)"):
        curate(candidates, frozen, LIMITS, count_tokens)


def test_all_too_long_names_both_reasons() -> None:
    limits = CurationLimits(min_train_examples=1, max_reply_chars=20, max_example_tokens=8)
    candidates = [ex(1, reply="x" * 21), ex(2, question="one two three four five six seven")]
    with pytest.raises(DatasetError) as error:
        curate(candidates, [], limits, count_tokens)
    assert "all 2 examples were dropped" in str(error.value)
    assert "1 reply_too_long" in str(error.value)
    assert "1 over_context" in str(error.value)


# -- filters --------------------------------------------------------------------------------
def test_exact_duplicates_are_dropped_ignoring_case_and_whitespace() -> None:
    candidates = [
        ex(1, question="How long do refunds take?", reply="Five business days."),
        ex(2, question="how  long do REFUNDS\n take?", reply="five   business\tDAYS."),
        ex(3, question="How long do refunds take?", reply="Seven business days."),
        ex(4),
    ]
    curated = curate(candidates, [], LIMITS, count_tokens)
    assert curated.dropped == Counter({"duplicate": 1})
    kept = ids([*curated.train, *curated.validation, *curated.holdout])
    assert kept == ["c001", "c003", "c004"]


def test_exact_duplicates_ignore_whitespace_around_question_and_reply() -> None:
    candidates = [
        ex(1, question="How long do refunds take?", reply="Five business days."),
        ex(2, question="How long do refunds take?\n", reply=" Five business days."),
        ex(3),
    ]
    curated = curate(candidates, [], LIMITS, count_tokens)
    assert curated.dropped == Counter({"duplicate": 1})


def test_near_duplicates_are_dropped_at_the_threshold() -> None:
    base = (
        "our store accepts returns of unopened items within thirty days of delivery and "
        "refunds go to the original payment method within five business days"
    )
    candidates = [
        ex(1, question="What is the return policy?", reply=base),
        ex(2, question="What is the return policy?", reply=base + " only"),
        ex(3, question="Do you ship abroad?", reply="We ship to every country in Europe."),
    ]
    cosine = float(embed([f"q\n{base}"])[0] @ embed([f"q\n{base} only"])[0])
    assert 0.9 < cosine < 0.99

    strict = curate(
        candidates,
        [],
        CurationLimits(min_train_examples=1, near_duplicate_similarity=0.9),
        count_tokens,
        embed,
    )
    assert strict.dropped == Counter({"near_duplicate": 1})
    assert "c002" not in ids([*strict.train, *strict.validation, *strict.holdout])

    loose = curate(
        candidates,
        [],
        CurationLimits(min_train_examples=1, near_duplicate_similarity=0.999),
        count_tokens,
        embed,
    )
    assert loose.dropped == Counter()
    assert ids([*loose.train, *loose.validation, *loose.holdout]) == ["c001", "c002", "c003"]


def test_near_duplicate_of_a_frozen_holdout_item_is_dropped() -> None:
    reply = "returns of unopened items are accepted within thirty days of delivery"
    frozen = [ex(1, question="Return policy?", reply=reply)]
    candidates = [ex(2, question="Return policy?", reply=reply + " indeed"), ex(3), ex(4)]
    curated = curate(
        candidates,
        frozen,
        CurationLimits(min_train_examples=1, near_duplicate_similarity=0.9),
        count_tokens,
        embed,
    )
    assert curated.dropped == Counter({"near_duplicate": 1})
    assert "c002" not in ids([*curated.train, *curated.validation, *curated.holdout])


def test_too_long_reply_and_over_context_are_dropped_and_counted() -> None:
    limits = CurationLimits(min_train_examples=1, max_reply_chars=40, max_example_tokens=12)
    candidates = [
        ex(1, reply="y" * 41),  # reply over 40 characters
        ex(2, reply="a b c d e f g h i j"),  # 5 system + 4 user + 10 reply = 19 tokens
        ex(3),
        ex(4),
        ex(5, reply="z" * 40),  # exactly at the limit: kept
    ]
    curated = curate(candidates, [], limits, count_tokens)
    assert curated.dropped == Counter({"reply_too_long": 1, "over_context": 1})
    assert ids([*curated.train, *curated.validation, *curated.holdout]) == [
        "c003",
        "c004",
        "c005",
    ]


def test_pii_is_scrubbed_in_messages_and_reply() -> None:
    candidate = ex(
        1,
        question="My email is jane.doe@example.com, where is my refund?",
        reply="We wrote to jane.doe@example.com; call +32 470 12 34 56.",
    )
    curated = curate([candidate], [], LIMITS, count_tokens)
    [example] = curated.train
    assert example.messages[1]["content"] == "My email is [EMAIL], where is my refund?"
    assert example.messages[0] == candidate.messages[0]
    assert example.reply == "We wrote to [EMAIL]; call [PHONE]."
    assert curated.pii == Counter({"EMAIL": 2, "PHONE": 1})


def test_pii_is_scrubbed_in_parts_names_and_tool_calls() -> None:
    """Issue 19: content given as parts, and `name`, skipped the scrub entirely."""
    call = {"id": "call_1", "type": "function", "function": {
        "name": "find_order", "arguments": '{"email": "jane@example.com"}'}}  # fmt: skip
    candidate = Example(
        id="c001", alias="support", origin="correction", stratum="correction",
        messages=[
            {"role": "user", "name": "jane@example.com", "content": [
                {"type": "text", "text": "Card 4111.1111.1111.1111, where is my order?"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Owner: josé@exämple.com"},
        ],
        reply="It ships today; we will call 555-0123.",
    )  # fmt: skip
    curated = curate([candidate], [], LIMITS, count_tokens)
    [example] = curated.train
    user, assistant, tool = example.messages
    assert user["name"] == "[EMAIL]"
    assert user["content"] == [{"type": "text", "text": "Card [CARD], where is my order?"}]
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"email": "[EMAIL]"}'
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "Owner: [EMAIL]"}
    assert example.reply == "It ships today; we will call [PHONE]."
    assert curated.pii == Counter({"EMAIL": 3, "CARD": 1, "PHONE": 1})


# -- the split ------------------------------------------------------------------------------
def _pool() -> list[Example]:
    return [ex(n, "correction") for n in range(30)] + [
        ex(n, "negative_feedback") for n in range(30, 40)
    ]


def test_split_is_deterministic() -> None:
    first = curate(_pool(), [], LIMITS, count_tokens)
    second = curate(list(reversed(_pool())), [], LIMITS, count_tokens)
    assert ids(first.train) == ids(second.train)
    assert ids(first.validation) == ids(second.validation)
    assert ids(first.holdout) == ids(second.holdout)


def test_split_is_stratified_and_complete() -> None:
    curated = curate(_pool(), [], LIMITS, count_tokens)
    holdout = Counter(example.stratum for example in curated.holdout)
    assert holdout == Counter({"correction": 6, "negative_feedback": 2})  # 20% of 30 and 10
    assert len(curated.validation) == 3  # 10% of the 32 trainable
    assert len(curated.train) == 29
    assert curated.new_holdout == curated.holdout
    everything = [*curated.train, *curated.validation, *curated.holdout]
    assert ids(everything) == ids(_pool())  # each example in exactly one split


def test_each_stratum_keeps_a_training_example() -> None:
    candidates = [ex(1, "retry"), ex(2, "correction"), ex(3, "correction")]
    curated = curate(
        candidates, [], CurationLimits(min_train_examples=1, holdout_fraction=0.9), count_tokens
    )
    trainable = Counter(example.stratum for example in [*curated.train, *curated.validation])
    assert trainable == Counter({"retry": 1, "correction": 1})
    assert Counter(example.stratum for example in curated.holdout) == Counter({"correction": 1})


# -- the frozen holdout ---------------------------------------------------------------------
def test_frozen_holdout_is_kept_and_never_trained_on() -> None:
    frozen = [ex(1, reply="the old reply"), ex(2, "retry")]
    changed = ex(1, reply="an edited reply")  # same id, passed again as a candidate
    candidates = [changed, frozen[1], *(ex(n) for n in range(3, 20))]
    curated = curate(candidates, frozen, LIMITS, count_tokens)
    trained = {example.id for example in [*curated.train, *curated.validation]}
    assert trained.isdisjoint({"c001", "c002"})
    assert curated.holdout[:2] == frozen  # the text it had when it was frozen
    assert ids(curated.holdout).count("c001") == 1
    assert {example.id for example in curated.new_holdout}.isdisjoint({"c001", "c002"})


def test_growing_pool_only_adds_to_the_holdout() -> None:
    first = curate([ex(n) for n in range(20)], [], LIMITS, count_tokens)
    assert len(first.holdout) == 4
    grown = [ex(n) for n in range(40)]
    second = curate(grown, first.new_holdout, LIMITS, count_tokens)
    assert set(ids(first.holdout)) <= set(ids(second.holdout))
    assert len(second.holdout) == 8  # topped up to 20% of 40
    assert set(ids(second.new_holdout)).isdisjoint(ids(first.holdout))
    trained = set(ids([*second.train, *second.validation]))
    assert trained.isdisjoint(ids(second.holdout))


def test_earlier_training_examples_never_move_to_the_holdout() -> None:
    first = curate([ex(n) for n in range(20)], [], LIMITS, count_tokens)
    trained_before = set(ids([*first.train, *first.validation]))
    assert set(ids(first.new_trained)) == trained_before
    second = curate(
        [ex(n) for n in range(40)],
        first.new_holdout,
        LIMITS,
        count_tokens,
        trained=trained_before,
    )
    assert set(ids(second.new_holdout)).isdisjoint(trained_before)
    assert trained_before <= set(ids([*second.train, *second.validation]))
    assert set(ids(second.new_trained)).isdisjoint(trained_before)


# -- snapshots ------------------------------------------------------------------------------
def _curated() -> Curated:
    return curate(_pool(), [], LIMITS, count_tokens)


def test_snapshot_round_trips(tmp_path: Path) -> None:
    curated = _curated()
    snapshot = write_snapshot(tmp_path, "support", curated, {"approved": 40})
    assert snapshot.path.parent == tmp_path / "support"
    assert sorted(p.name for p in snapshot.path.iterdir()) == [
        "holdout.jsonl",
        MANIFEST,
        "train.jsonl",
        "validation.jsonl",
    ]
    opened = read_snapshot(snapshot.path)
    assert opened.examples("train") == sorted(curated.train, key=lambda e: e.id)
    assert opened.examples("validation") == sorted(curated.validation, key=lambda e: e.id)
    assert opened.examples("holdout") == sorted(curated.holdout, key=lambda e: e.id)
    assert opened.manifest["counts"] == {"train": 29, "validation": 3, "holdout": 8}
    assert opened.manifest["approved"] == 40
    assert opened.manifest["alias"] == "support"
    assert opened.manifest["new_holdout"] == 8
    assert opened.manifest == snapshot.manifest
    assert not [p for p in (tmp_path / "support").iterdir() if p.name.startswith(".")]


def test_the_same_examples_in_another_order_are_the_same_dataset(tmp_path: Path) -> None:
    """The hash names a run's work directory: a resumed run found the holdout in another
    order (its new items frozen since) and started again from step 0."""
    curated = _curated()
    shuffled = dataclasses.replace(
        curated,
        train=curated.train[::-1],
        holdout=curated.holdout[3:] + curated.holdout[:3],
    )
    first = write_snapshot(tmp_path, "support", curated, {})
    again = write_snapshot(tmp_path, "support", shuffled, {})
    assert first.manifest["sha256"] == again.manifest["sha256"]
    changed = dataclasses.replace(curated, holdout=curated.holdout[1:])
    assert (
        write_snapshot(tmp_path, "support", changed, {}).manifest["sha256"]
        != (first.manifest["sha256"])
    )


def test_tampered_split_is_refused(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path, "support", _curated(), {})
    with (snapshot.path / "train.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": "injected"}\n')
    with pytest.raises(SnapshotCorrupt, match=r"train\.jsonl does not match"):
        read_snapshot(snapshot.path)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path, "support", _curated(), {})
    (snapshot.path / MANIFEST).unlink()
    with pytest.raises(SnapshotCorrupt, match="no readable manifest"):
        read_snapshot(snapshot.path)


def test_missing_split_file_is_refused(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path, "support", _curated(), {})
    (snapshot.path / "holdout.jsonl").unlink()
    with pytest.raises(SnapshotCorrupt, match=r"cannot read holdout\.jsonl"):
        read_snapshot(snapshot.path)


def test_too_few_examples_after_dropping_is_refused() -> None:
    # Ten approvals of one question and reply leave one example: not worth a training run.
    same = [Example(f"c{n}", "support", [{"role": "user", "content": "Refund time?"}],
                    "Five days.", "correction", "correction") for n in range(10)]  # fmt: skip
    with pytest.raises(DatasetError, match=r"only 1 training examples .*9 duplicate"):
        curate(same, [], CurationLimits(min_train_examples=8), count_tokens)


# -- growing the holdout between training runs (scheduled re-evaluation) --------------------
def test_grow_holdout_picks_what_a_training_run_would() -> None:
    candidates = [ex(n) for n in range(20)]
    grown = grow_holdout(candidates, [], LIMITS, count_tokens, embed)
    curated = curate(candidates, [], LIMITS, count_tokens, embed)
    assert ids(grown) == ids(curated.new_holdout) and len(grown) == 4  # 20% of 20


def test_grow_holdout_adds_only_new_examples_and_never_trained_ones() -> None:
    frozen = grow_holdout([ex(n) for n in range(10)], [], LIMITS, count_tokens, embed)
    trained = {f"c{n:03d}" for n in range(10, 15)}
    grown = grow_holdout([ex(n) for n in range(20)], frozen, LIMITS, count_tokens, embed, trained)
    assert set(ids(grown)).isdisjoint(ids(frozen)) and set(ids(grown)).isdisjoint(trained)
    assert len(frozen) + len(grown) == 4  # the holdout is 20% of all 20, not 20% of each batch
    assert grow_holdout([ex(n) for n in range(2)], [], LIMITS, count_tokens, embed) == []


def test_grow_holdout_scrubs_and_filters_like_curate() -> None:
    leaky = ex(1, reply="write to jane.doe@example.com about value3")
    copies = [ex(n, question="same question", reply="same reply") for n in range(2, 12)]
    grown = grow_holdout(
        # 0.99, the most the limits allow: every example of strata this small.
        [leaky, *copies], [], CurationLimits(min_train_examples=1, holdout_fraction=0.99),
        count_tokens, embed,
    )  # fmt: skip
    assert "jane.doe@example.com" not in str([example.reply for example in grown])
    assert len([example for example in grown if example.question == "same question"]) <= 1
