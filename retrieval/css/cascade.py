"""The cascade over a page: which rules win for each element, and what the element then
shows and passes on to what it contains."""

from __future__ import annotations

from dataclasses import dataclass, field

from retrieval.css.budget import Budget
from retrieval.css.declarations import parse_declarations
from retrieval.css.hiding import MIN_FONT_PX, hidden_box, invisible_on
from retrieval.css.selectors import Element, Key
from retrieval.css.stylesheets import Rule
from retrieval.css.values import (
    DEFAULT_FONT_PX,
    KEYWORDS,
    RGBA,
    font_px,
    painted_over,
    parse_colour,
)

WHITE: RGBA = (255.0, 255.0, 255.0, 1.0)
BLACK: RGBA = (0.0, 0.0, 0.0, 1.0)
Progress = tuple[int, int]  # (rule, n): the first n compounds of the rule have matched
# important, inline, specificity, order: the greatest wins
Rank = tuple[bool, bool, tuple[int, int, int], int]

# Presentational attributes of old HTML, and the styles they stand for.
_COLOUR_ATTRIBUTES = {
    "font": {"color": "color"},
    "body": {"text": "color", "bgcolor": "background-color"},
    "table": {"bgcolor": "background-color"},
    "tr": {"bgcolor": "background-color"},
    "td": {"bgcolor": "background-color"},
    "th": {"bgcolor": "background-color"},
}


@dataclass
class State:
    """What an open element passes on to what it contains."""

    hidden: bool  # the element and all it contains are not shown
    font_px: float
    colour: RGBA | None  # None: not known
    backdrop: RGBA | None  # the colour behind its text; None: not known
    added: list[tuple[Key, Progress]]
    text_shown: bool = field(init=False)  # its own text (a child may differ)

    def __post_init__(self) -> None:
        self.text_shown = not (
            self.hidden
            or self.font_px < MIN_FONT_PX
            or (self.colour is not None and invisible_on(self.colour, self.backdrop))
        )


class Cascade:
    """Visibility of the elements of a page, opened and closed in document order."""

    def __init__(self, rules: list[Rule], budget: Budget) -> None:
        self._rules = rules
        self._budget = budget
        self._first: dict[Key, list[int]] = {}
        for number, rule in enumerate(rules):
            if rule.selector.compounds:
                self._first.setdefault(rule.selector.compounds[0].key, []).append(number)
            else:
                self._first.setdefault(("*", ""), []).append(number)
        # An open element and its ancestors matched the first n compounds of these rules,
        # by the key of the compound each waits for next.
        self._waiting: dict[Key, dict[Progress, None]] = {}
        self.root = State(False, DEFAULT_FONT_PX, BLACK, WHITE, [])

    def open(
        self,
        parent: State,
        tag: str,
        attrs: list[tuple[str, str | None]],
        hidden: bool,
        position: tuple[int, int] = (1, 1),
    ) -> State:
        if parent.hidden:
            return State(True, parent.font_px, parent.colour, parent.backdrop, [])
        element = Element.of(tag, attrs, position)
        matched, added = self._match(element) if self._rules else ([], [])
        winners = self._winners(matched, element.attributes.get("style"), _hints(element))
        if not winners:
            return State(hidden, parent.font_px, parent.colour, parent.backdrop, added)
        return State(
            hidden or hidden_box(winners),
            font_px(winners.get("font-size"), parent.font_px),
            _colour(winners, parent.colour),
            _backdrop(winners, parent.backdrop),
            added,
        )

    def close(self, state: State) -> None:
        for key, progress in state.added:
            del self._waiting[key][progress]

    def _match(self, element: Element) -> tuple[list[Rule], list[tuple[Key, Progress]]]:
        """The rules that match ``element``, and the progress it adds for its descendants."""
        matched: list[Rule] = []
        advanced: list[Progress] = []
        first, waiting = self._first, self._waiting
        for key in element.index_keys():
            self._budget.spend(1)
            for number in first.get(key) or ():
                self._step(element, number, 0, matched, advanced)
            for number, done in waiting.get(key) or ():
                self._step(element, number, done, matched, advanced)
        return matched, self._wait(advanced)

    def _wait(self, advanced: list[Progress]) -> list[tuple[Key, Progress]]:
        added: list[tuple[Key, Progress]] = []
        for number, done in advanced:
            key = self._rules[number].selector.compounds[done].key
            bucket = self._waiting.setdefault(key, {})
            if (number, done) not in bucket:
                bucket[(number, done)] = None
                added.append((key, (number, done)))
        return added

    def _step(
        self,
        element: Element,
        number: int,
        done: int,
        matched: list[Rule],
        advanced: list[Progress],
    ) -> None:
        rule = self._rules[number]
        compounds = rule.selector.compounds
        if not compounds or compounds[done].matches(element, self._budget):
            if done + 1 >= len(compounds):
                matched.append(rule)
            else:
                advanced.append((number, done + 1))

    def _winners(
        self, matched: list[Rule], style: str | None, hints: dict[str, str]
    ) -> dict[str, str]:
        # Presentational attributes (<font color>, bgcolor) lose to every style rule.
        best: dict[str, tuple[Rank, str]] = {
            name: ((False, False, (0, 0, 0), -1), value) for name, value in hints.items()
        }
        for rule in matched:
            self._budget.spend(len(rule.declarations))
            for name, (value, important) in rule.declarations.items():
                _offer(best, name, value, (important, False, rule.selector.specificity, rule.order))
        if style:
            self._budget.spend(len(style) // 16)
            for name, (value, important) in parse_declarations(style).items():
                _offer(best, name, value, (important, True, (0, 0, 0), 0))
        return {name: value for name, (_, value) in best.items()}


def _offer(best: dict[str, tuple[Rank, str]], name: str, value: str, rank: Rank) -> None:
    if name not in best or rank > best[name][0]:
        best[name] = (rank, value)


def _colour(winners: dict[str, str], inherited: RGBA | None) -> RGBA | None:
    if "color" in winners and winners["color"] not in KEYWORDS:
        return parse_colour(winners["color"])
    return inherited


def _backdrop(winners: dict[str, str], inherited: RGBA | None) -> RGBA | None:
    """The colour behind the element's text; None where it cannot be known."""
    if winners.get("background-image", "none") not in ("none", *KEYWORDS):
        return None  # text over a picture: its colour cannot be judged
    if "background-color" not in winners:
        return inherited
    value = winners["background-color"]
    painted = None if value == "unknown" else parse_colour(value)
    if value == "unknown" or (painted is None and value not in KEYWORDS):
        return None
    if painted is not None and painted[3] > 0:
        return painted_over(painted, inherited)
    return inherited


def _hints(element: Element) -> dict[str, str]:
    """The styles old HTML attributes give: ``<font color>``, ``<body text bgcolor>``..."""
    names = _COLOUR_ATTRIBUTES.get(element.tag)
    if not names:
        return {}
    return {
        style: " ".join(element.attributes[attribute].lower().split())
        for attribute, style in names.items()
        if element.attributes.get(attribute)
    }
