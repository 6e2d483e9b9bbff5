"""Quality KPIs of each version from its stored conversations and their feedback."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.answers import says_idk


@dataclass(frozen=True)
class StoredCompletion:
    """One stored completion, reduced to what the KPIs need."""

    version: str
    ok: bool
    answer: str
    groundedness: float | None = None
    polarity: str | None = None  # the feedback's, if any


@dataclass
class VersionQuality:
    requests: int = 0
    errors: int = 0
    feedback: int = 0
    positive: int = 0
    negative: int = 0
    grounded: int = 0
    groundedness_sum: float = 0.0
    idk: int = 0

    def add(self, item: StoredCompletion) -> None:
        self.requests += 1
        if not item.ok:
            self.errors += 1
            return
        self.idk += says_idk(item.answer)
        if item.groundedness is not None:
            self.grounded += 1
            self.groundedness_sum += item.groundedness
        if item.polarity in ("positive", "negative"):
            self.feedback += 1
            self.positive += item.polarity == "positive"
            self.negative += item.polarity == "negative"

    @property
    def positive_ratio(self) -> float | None:
        """Positive share of thumbs given (neutral ratings left out)."""
        return self.positive / self.feedback if self.feedback else None

    @property
    def groundedness(self) -> float | None:
        return self.groundedness_sum / self.grounded if self.grounded else None

    @property
    def idk_rate(self) -> float | None:
        answered = self.requests - self.errors
        return self.idk / answered if answered else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "feedback": self.feedback,
            "positive": self.positive,
            "negative": self.negative,
            "positive_ratio": self.positive_ratio,
            "grounded": self.grounded,
            "groundedness": self.groundedness,
            "idk_rate": self.idk_rate,
        }


def quality_by_version(items: Iterable[StoredCompletion]) -> dict[str, VersionQuality]:
    by_version: dict[str, VersionQuality] = {}
    for item in items:
        by_version.setdefault(item.version, VersionQuality()).add(item)
    return by_version
