"""General-ability probes: the format the gate reads (trainer/evaluate.py) and the settings
check (core/sections.py), kept in one place.

One JSON object a line, ``{"prompt": "...", "expect": "..."}``, with ``"also": [...]`` for
other right answers ("little" is as opposite to "big" as "small" is); blank lines are
skipped. A probe passes when the answer contains ``expect`` or one of ``also`` as whole words
(trainer/scoring.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    prompt: str
    expect: str
    also: tuple[str, ...] = ()  # other right answers

    @property
    def accepted(self) -> tuple[str, ...]:
        return (self.expect, *self.also)


def parse_probes(text: str, origin: str) -> list[Probe]:
    """The probes in ``text``; ValueError naming ``origin`` and the probe's number when one
    is not an object with string fields prompt and expect (not empty) and, if given, a list
    of non-empty strings ``also``, or there are none."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{origin} holds no probes")
    return [_probe(line, f"{origin}, probe {number}") for number, line in enumerate(lines, 1)]


def format_probes(probes: Iterable[Probe]) -> str:
    """``probes`` as a file ``parse_probes`` reads back (an operator's ``eval_probes_path``)."""
    lines = []
    for probe in probes:
        fields: dict[str, object] = {"prompt": probe.prompt, "expect": probe.expect}
        if probe.also:
            fields["also"] = list(probe.also)
        lines.append(json.dumps(fields) + "\n")
    return "".join(lines)


def _probe(line: str, where: str) -> Probe:
    try:
        probe = json.loads(line)
    except json.JSONDecodeError:
        probe = None
    if not (isinstance(probe, dict) and isinstance(probe.get("prompt"), str)
            and _answer(probe.get("expect"))):  # fmt: skip
        raise ValueError(
            f"{where}: write a JSON object with string fields prompt and expect (not empty)"
        )
    also = probe.get("also", [])
    if not (isinstance(also, list) and all(_answer(answer) for answer in also)):
        raise ValueError(f"{where}: also must be a list of other right answers (strings)")
    return Probe(prompt=probe["prompt"], expect=probe["expect"], also=tuple(also))


def _answer(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
