"""The evaluation gate's decision and the flagging rules that need no database."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from core.sections import FlagRules
from core.store.conversations import ConversationRecord
from gateway.flagging import Flag, Flagger, alias_of
from trainer.evaluate import GatePolicy, SetScore, changed_items, decide

POLICY = GatePolicy(margin=0.05, probe_tolerance=0.10)


def _scores(model: str, holdout: float, probes: float, count: int = 20) -> tuple[SetScore, ...]:
    return (
        SetScore(model, count=count, accuracy=holdout),
        SetScore(model, count=10, accuracy=probes),
    )


def _decide(candidate: tuple[SetScore, ...], live: tuple[SetScore, ...]) -> Any:
    return decide((candidate[0], candidate[1]), (live[0], live[1]), POLICY)


# -- the gate -------------------------------------------------------------------------------
def test_gate_passes_on_gain_with_probes_within_tolerance() -> None:
    verdict = _decide(_scores("cand", 0.80, 0.85), _scores("live", 0.70, 0.90))
    assert verdict.passed
    assert verdict.reasons == []
    assert verdict.holdout_gain == 0.1
    assert verdict.probe_change == -0.05


def test_gate_passes_at_exactly_the_margin() -> None:
    policy = GatePolicy(margin=0.25, probe_tolerance=0.0)
    verdict = decide(
        (SetScore("c", 4, 0.75), SetScore("c", 4, 0.5)),
        (SetScore("l", 4, 0.5), SetScore("l", 4, 0.5)),
        policy,
    )
    assert verdict.passed
    assert verdict.holdout_gain == 0.25


def test_gate_fails_when_gain_is_below_the_margin() -> None:
    verdict = _decide(_scores("cand", 0.72, 0.90), _scores("live", 0.70, 0.90))
    assert not verdict.passed
    assert len(verdict.reasons) == 1
    assert "below the margin 0.050" in verdict.reasons[0]
    assert "gain +0.020" in verdict.reasons[0]
    assert verdict.holdout_gain == 0.02


def test_gate_fails_when_candidate_is_worse() -> None:
    verdict = _decide(_scores("cand", 0.60, 0.90), _scores("live", 0.70, 0.90))
    assert not verdict.passed
    assert "gain -0.100" in verdict.reasons[0]


def test_gate_fails_when_probes_fall_beyond_tolerance() -> None:
    verdict = _decide(_scores("cand", 0.90, 0.70), _scores("live", 0.70, 0.90))
    assert not verdict.passed
    assert len(verdict.reasons) == 1
    assert verdict.reasons[0].startswith("probe accuracy fell 0.200")
    assert "tolerance 0.100" in verdict.reasons[0]
    assert verdict.probe_change == -0.2


def test_small_probe_losses_cannot_add_up_over_versions() -> None:
    # Each version lost 0.08 against the one before (within 0.10), but this one is 0.16
    # below the base: it does not ship.
    base = SetScore("base", count=10, accuracy=0.90)
    candidate, live = _scores("v3", 0.90, 0.74), _scores("v2", 0.70, 0.82)
    verdict = decide((candidate[0], candidate[1]), (live[0], live[1]), POLICY, base)
    assert not verdict.passed
    assert verdict.reasons == [
        "probe accuracy 0.740 is more than the tolerance 0.100 below the base model's 0.900"
    ]
    ships = decide((candidate[0], SetScore("v3", 10, 0.81)), (live[0], live[1]), POLICY, base)
    assert ships.passed


def test_gate_gives_a_reason_for_each_failing_condition() -> None:
    verdict = _decide(_scores("cand", 0.70, 0.50), _scores("live", 0.70, 0.90))
    assert not verdict.passed
    assert len(verdict.reasons) == 2
    assert "below the margin" in verdict.reasons[0]
    assert "probe accuracy fell" in verdict.reasons[1]


def _holdout(model: str, marks: dict[str, str]) -> SetScore:
    """A scored holdout from each form's marks, one character an item: "1" right, "0" wrong."""
    items = [
        {"id": f"q{number}~gate-{form}", "form": form, "correct": mark == "1"}
        for form, row in marks.items()
        for number, mark in enumerate(row)
    ]
    right = sum(item["correct"] for item in items)
    return SetScore(model, len(items), accuracy=round(right / len(items), 4), items=items)


def _decide_holdouts(candidate: SetScore, live: SetScore) -> Any:
    probes = SetScore("p", 10, 0.9)
    return decide((candidate, probes), (live, probes), POLICY)


def test_a_form_both_sides_answer_all_wrong_is_left_out_of_the_gain() -> None:
    # Stop 35's refused candidate, item for item in shape: one question better as served,
    # level reworded, and closed book 0 for both (made-up facts neither trained on).
    candidate = _holdout("c", {"served": "1111000", "reworded": "1110000", "closed_book": "0" * 7})
    live = _holdout("l", {"served": "1110000", "reworded": "0111000", "closed_book": "0" * 7})
    assert round(candidate.accuracy - live.accuracy, 4) == 0.0476  # pooled over all 21: short
    verdict = _decide_holdouts(candidate, live)
    assert verdict.passed
    assert verdict.holdout_gain == 0.0714  # 7 of 14 against 6 of 14
    assert verdict.forms_left_out == ("closed_book",)
    assert verdict.report()["forms_left_out"] == ["closed_book"]


def test_a_form_both_sides_answer_all_right_is_left_out_and_named_in_the_reason() -> None:
    candidate = _holdout("c", {"served": "1111", "reworded": "1000"})
    live = _holdout("l", {"served": "1111", "reworded": "0100"})
    verdict = _decide_holdouts(candidate, live)
    assert not verdict.passed
    assert verdict.holdout_gain == 0.0
    assert verdict.reasons == [
        "holdout accuracy 0.250 vs live 0.250 (without served: the same on both sides): "
        "gain +0.000 is below the margin 0.050"
    ]


def test_a_form_the_sides_only_tie_in_still_counts() -> None:
    # reworded: one right answer each, on different questions: a tie, not an empty form.
    candidate = _holdout("c", {"served": "1100", "reworded": "1000", "closed_book": "0000"})
    live = _holdout("l", {"served": "1000", "reworded": "0100", "closed_book": "0000"})
    verdict = _decide_holdouts(candidate, live)
    assert verdict.holdout_gain == 0.125  # 3 of 8 against 2 of 8: reworded kept
    assert verdict.forms_left_out == ("closed_book",)


def test_a_holdout_the_sides_answer_alike_everywhere_gains_nothing() -> None:
    same = {"served": "0000", "closed_book": "0000"}
    verdict = _decide_holdouts(_holdout("c", same), _holdout("l", same))
    assert not verdict.passed
    assert verdict.holdout_gain == 0.0


def _holdout_item(item_id: str, answer: str, correct: bool) -> dict[str, Any]:
    return {"id": item_id, "form": "reworded", "question": f"q {item_id}", "answer": answer,
            "reference": f"ref {item_id}", "correct": correct}  # fmt: skip


def test_the_report_names_the_items_the_sides_disagree_on_with_both_answers() -> None:
    candidate = SetScore("c", 3, items=[_holdout_item("a", "right", True),
                                        _holdout_item("b", "wrong", False),
                                        _holdout_item("c", "same", True)])  # fmt: skip
    live = SetScore("l", 3, items=[_holdout_item("c", "same", True),
                                   _holdout_item("b", "right", True),
                                   _holdout_item("a", "wrong", False)])  # fmt: skip
    assert changed_items(candidate, live) == [
        {"asked": "q a", "form": "reworded", "expected": "ref a", "candidate": "right",
         "live": "wrong", "candidate_correct": True},
        {"asked": "q b", "form": "reworded", "expected": "ref b", "candidate": "wrong",
         "live": "right", "candidate_correct": False},
    ]  # fmt: skip


def test_changed_probes_are_matched_by_prompt() -> None:
    def probe(prompt: str, answer: str, ok: bool) -> dict[str, Any]:
        return {"prompt": prompt, "answer": answer, "expect": ["4"], "correct": ok}

    candidate = SetScore("c", 2, items=[probe("2+2?", "5", False), probe("3+1?", "4", True)])
    live = SetScore("l", 2, items=[probe("3+1?", "4", True), probe("2+2?", "4", True)])
    assert changed_items(candidate, live) == [
        {"asked": "2+2?", "expected": ["4"], "candidate": "5", "live": "4",
         "candidate_correct": False},
    ]  # fmt: skip
    assert changed_items(candidate, SetScore("l")) == []  # nothing to compare with


def test_gate_fails_on_an_empty_holdout() -> None:
    verdict = _decide(_scores("cand", 0.0, 0.90, count=0), _scores("live", 0.0, 0.90, count=0))
    assert not verdict.passed
    assert verdict.reasons == ["the holdout is empty: nothing to measure a gain on"]


# -- conversation rules ---------------------------------------------------------------------
def _record(
    answer: str = "Returns are accepted within 30 days [1].",
    *,
    requested: str = "cycles",
    served: str = "cycles-v3",
    groundedness: float | None = 0.9,
    top_score: float | None = 0.8,
    status: str = "ok",
) -> ConversationRecord:
    return ConversationRecord(
        id="cmpl-1",
        requested_model=requested,
        served_model=served,
        stream=False,
        request={"messages": [{"role": "user", "content": "Can I return my bike?"}]},
        status=status,  # type: ignore[arg-type]
        response=[{"role": "assistant", "content": answer}],
        groundedness=groundedness,
        top_score=top_score,
    )


def _flagger(rules_by_alias: dict[str, FlagRules] | None = None) -> Flagger:
    # conversation_flags and feedback_flags never touch the database.
    no_db: Any = None
    return Flagger(db=no_db, default_rules=FlagRules(), rules_by_alias=rules_by_alias or {})


def test_alias_of_strips_the_version() -> None:
    assert alias_of("cycles", "cycles-v3") == "cycles"
    assert alias_of("cycles-v2", "base-model") == "cycles"
    assert alias_of("cycles", "base-model") == "cycles"


def test_low_groundedness_is_flagged_below_the_threshold() -> None:
    flags = _flagger().conversation_flags(_record(groundedness=0.2))
    assert flags == [
        Flag(
            "cmpl-1",
            "cycles",
            "cycles-v3",
            "low_groundedness",
            {"groundedness": 0.2, "threshold": 0.35},
        )
    ]


@pytest.mark.parametrize("groundedness", [0.35, 0.6, None])
def test_groundedness_at_or_above_the_threshold_is_not_flagged(
    groundedness: float | None,
) -> None:
    assert _flagger().conversation_flags(_record(groundedness=groundedness)) == []


def test_idk_with_good_sources_is_flagged() -> None:
    record = _record("I don't know, the sources do not say.", top_score=0.5)
    assert _flagger().conversation_flags(record) == [
        Flag(
            "cmpl-1",
            "cycles",
            "cycles-v3",
            "idk_with_sources",
            {"top_score": 0.5, "threshold": 0.5},
        )
    ]


@pytest.mark.parametrize("top_score", [0.3, None])
def test_idk_without_good_sources_is_not_flagged(top_score: float | None) -> None:
    record = _record("I'm not sure about that.", top_score=top_score)
    assert _flagger().conversation_flags(record) == []


def test_both_conversation_rules_can_fire() -> None:
    record = _record("I do not know.", groundedness=0.0, top_score=0.9)
    reasons = [flag.reason for flag in _flagger().conversation_flags(record)]
    assert reasons == ["low_groundedness", "idk_with_sources"]


def test_per_alias_rules_override_the_defaults() -> None:
    flagger = _flagger({"cycles": FlagRules(groundedness_below=None, idk_min_source_score=None)})
    quiet = _record("I don't know.", groundedness=0.1, top_score=0.9)
    assert flagger.conversation_flags(quiet) == []
    other = _record(
        "I don't know.", requested="rentals", served="rentals-v1", groundedness=0.1, top_score=0.9
    )
    assert [flag.reason for flag in flagger.conversation_flags(other)] == [
        "low_groundedness",
        "idk_with_sources",
    ]
    stricter = _flagger({"cycles": FlagRules(groundedness_below=0.95)})
    assert [flag.reason for flag in stricter.conversation_flags(_record())] == ["low_groundedness"]


@pytest.mark.parametrize("status", ["error", "cancelled"])
def test_failed_records_are_never_flagged(status: str) -> None:
    record = _record("I don't know.", groundedness=0.0, top_score=0.9, status=status)
    assert _flagger().conversation_flags(record) == []


def test_record_without_response_is_not_flagged() -> None:
    record = _record(groundedness=0.0)
    record.response = []
    assert _flagger().conversation_flags(record) == []


# -- feedback rules -------------------------------------------------------------------------
ROW = SimpleNamespace(id="cmpl-9", requested_model="cycles", served_model="cycles-v3")


def _feedback(
    flagger: Flagger | None = None,
    *,
    polarity: str | None = None,
    correction: str | None = None,
    flag: str | None = None,
    by_admin: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    flags = (flagger or _flagger()).feedback_flags(
        ROW,  # type: ignore[arg-type]
        polarity=polarity,
        correction=correction,
        flag=flag,
        by_admin=by_admin,
    )
    assert all(
        (f.completion_id, f.alias, f.served_model) == ("cmpl-9", "cycles", "cycles-v3")
        for f in flags
    )
    return [(f.reason, f.detail) for f in flags]


def test_correction_is_flagged_as_correction() -> None:
    assert _feedback(correction="It is 30 days.") == [("correction", {})]
    assert _feedback(polarity="negative", correction="It is 30 days.") == [("correction", {})]


def test_negative_feedback_without_correction() -> None:
    assert _feedback(polarity="negative") == [("negative_feedback", {})]
    assert _feedback(polarity="positive") == []
    assert _feedback() == []


def test_operator_flag_needs_an_admin() -> None:
    assert _feedback(flag="wrong price", by_admin=True) == [
        ("operator_flag", {"flag": "wrong price"})
    ]
    assert _feedback(flag="wrong price", by_admin=False) == []
    assert _feedback(polarity="negative", flag="wrong", by_admin=True) == [
        ("negative_feedback", {}),
        ("operator_flag", {"flag": "wrong"}),
    ]


def test_feedback_rules_can_be_disabled_per_alias() -> None:
    flagger = _flagger(
        {"cycles": FlagRules(correction=False, negative_feedback=False, operator_flag=False)}
    )
    assert _feedback(flagger, polarity="negative", correction="x", flag="y", by_admin=True) == []
    only_negative = _flagger({"cycles": FlagRules(correction=False)})
    assert _feedback(only_negative, polarity="negative", correction="x") == [
        ("negative_feedback", {})
    ]
