"""How experiment arms are written, and how an experiment's results become a decision
(adapters/experiments.py). The live behaviour is in tests/integration/test_experiments.py."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.experiments import ExperimentError, decide, parse_arm


@pytest.mark.parametrize(
    ("spec", "version", "retrieval"),
    [
        ("v3", "support-v3", None),
        ("support-v3", "support-v3", None),
        ("base", None, None),
        ("v4:no-retrieval", "support-v4", False),
        ("base:collection=handbook-2", None, {"collection": "handbook-2"}),
        (" v4 ", "support-v4", None),
    ],
)
def test_arm_specs(spec: str, version: str | None, retrieval: Any) -> None:
    arm = parse_arm("support", spec)
    assert arm["name"] == spec.strip()
    assert arm["version"] == version and arm["retrieval"] == retrieval


@pytest.mark.parametrize("spec", ["", "v3:retrieval", "v3:collection=", "a b", "v3:no-retrieval:x"])
def test_bad_arm_specs_say_how_to_write_one(spec: str) -> None:
    with pytest.raises(ExperimentError, match="write VERSION, base"):
        parse_arm("support", spec)


def _results(**comparisons: tuple[float, bool]) -> dict[str, Any]:
    return {
        "control": "v3",
        "comparisons": {
            name: {"difference": difference, "significant": significant}
            for name, (difference, significant) in comparisons.items()
        },
    }


def test_an_arm_that_beats_the_control_wins() -> None:
    assert decide(_results(v4=(0.2, True))) == ("v4", "v4 beats v3")
    assert decide(_results(v4=(0.1, True), base=(0.3, True)))[0] == "base"  # the larger gain


def test_the_control_wins_only_when_it_beats_every_other_arm() -> None:
    assert decide(_results(v4=(-0.2, True))) == ("v3", "v3 beats every other arm")
    assert decide(_results(v4=(-0.2, True), base=(-0.1, False))) == (None, None)


def test_nothing_significant_decides_nothing() -> None:
    assert decide(_results(v4=(0.3, False))) == (None, None)


def test_names_ending_in_a_newline_are_refused() -> None:
    """`$` matches before a trailing newline; the name checks use `\\Z` (issue 19)."""
    from adapters.registry import check_alias
    from adapters.validation import InvalidAdapter
    from retrieval.errors import InvalidCollectionName
    from retrieval.service import check_collection_name

    assert check_collection_name("quill") == "quill" and check_alias("support") == "support"
    with pytest.raises(InvalidCollectionName):
        check_collection_name("quill\n")
    with pytest.raises(InvalidAdapter):
        check_alias("support\n")
