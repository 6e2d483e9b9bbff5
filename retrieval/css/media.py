"""Whether an ``@media`` query holds where reviewers read pages: a desktop screen 1024 to
1920 px wide and 600 to 1200 px high, with a mouse, in any colour scheme."""

from __future__ import annotations

import re

from retrieval.css.syntax import split_top
from retrieval.css.values import length_px

NEVER, SOMETIMES, ALWAYS = 0, 1, 2
WIDTHS = (1024.0, 1920.0)
HEIGHTS = (600.0, 1200.0)
_RANGE = re.compile(
    r"\s*(?:([^<>=]+?)\s*([<>]=?|=))?\s*(width|height)\s*(?:([<>]=?|=)\s*([^<>=]+?))?\s*\Z"
)
_ALWAYS_FEATURES = {"orientation": "landscape", "hover": "hover", "any-hover": "hover",
                    "pointer": "fine", "any-pointer": "fine", "scan": "progressive",
                    "update": "fast", "grid": "0"}  # fmt: skip
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "="}


def media_state(condition: str) -> int:
    """Whether a media query list holds for such a screen: NEVER (print, phones only...),
    ALWAYS (``screen``, ``(min-width: 768px)``...) or SOMETIMES (at some widths, or a
    feature not known here)."""
    if not condition.strip():
        return ALWAYS
    states = [_query_state(query.strip()) for query in split_top(condition.lower(), ",")]
    if ALWAYS in states:
        return ALWAYS
    return NEVER if all(state == NEVER for state in states) else SOMETIMES


def _query_state(query: str) -> int:
    negate = query.startswith("not ")
    query = query.removeprefix("not ").removeprefix("only ").strip()
    if not query:
        return NEVER  # an empty query in a list matches nothing
    state = ALWAYS
    if query[0] != "(":
        kind, _, query = query.partition(" ")
        state = ALWAYS if kind in ("all", "screen") else NEVER
        query = query.strip().removeprefix("and").strip()
    state = min(state, _conditions_state(query))
    if negate:
        return {ALWAYS: NEVER, NEVER: ALWAYS}.get(state, SOMETIMES)
    return state


def _conditions_state(query: str) -> int:
    """Whether the ``and``-ed conditions after a media type all hold."""
    if " or " in query or "(not" in query.replace(" ", "") or query.count("(") > 8:
        return SOMETIMES
    state = ALWAYS
    for condition in split_top(query, " ") if query else []:
        if condition in ("", "and"):
            continue
        if not (condition.startswith("(") and condition.endswith(")")):
            state = min(state, SOMETIMES)
            continue
        state = min(state, _feature_state(condition[1:-1]))
    return state


def _feature_state(feature: str) -> int:
    if len(feature) > 200:
        return SOMETIMES
    name, colon, value = (part.strip() for part in feature.partition(":"))
    if colon:
        return _named_feature_state(name, value)
    if name in ("hover", "pointer", "any-hover", "any-pointer", "color", "width", "height"):
        return ALWAYS
    return _range_syntax_state(feature)


def _named_feature_state(name: str, value: str) -> int:
    """``(name: value)``, such as ``(min-width: 768px)`` or ``(hover: hover)``."""
    if name in _ALWAYS_FEATURES:
        return ALWAYS if value == _ALWAYS_FEATURES[name] else NEVER
    axis = name.removeprefix("min-").removeprefix("max-")
    if axis in ("width", "height") and name != axis:
        return _range_state(axis, ">=" if name.startswith("min-") else "<=", value)
    if name in ("width", "height"):
        return min(_range_state(name, ">=", value), _range_state(name, "<=", value))
    return SOMETIMES


def _range_syntax_state(feature: str) -> int:
    """``(width >= 600px)``, ``(600px <= width < 1200px)``..."""
    match = _RANGE.match(feature)
    if not match or feature.count("width") + feature.count("height") != 1:
        return SOMETIMES
    before, first, axis, second, after = match.groups()
    state = ALWAYS
    if before is not None:  # 600px <= width: the same as width >= 600px
        state = min(state, _range_state(axis, _MIRROR[first], before))
    if after is not None:
        state = min(state, _range_state(axis, second, after))
    return state


def _range_state(axis: str, operator: str, value: str) -> int:
    size = length_px(value.strip())
    if size is None:
        return SOMETIMES
    low, high = WIDTHS if axis == "width" else HEIGHTS
    if operator == "=":
        return SOMETIMES if low <= size <= high else NEVER
    if operator.startswith(">"):  # the screen is at least `size`
        return ALWAYS if size <= low else NEVER if size > high else SOMETIMES
    return ALWAYS if size >= high else NEVER if size < low else SOMETIMES
