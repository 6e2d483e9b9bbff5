"""Reading declaration blocks: the properties that can hide text, shorthands expanded."""

from __future__ import annotations

import re
from collections.abc import Iterable

from retrieval.css.syntax import split_top, unescape
from retrieval.css.values import KEYWORDS, is_font_size, parse_colour

Declarations = dict[str, tuple[str, bool]]  # property -> (value, important)

PROPERTIES = frozenset({
    "display", "visibility", "content-visibility", "opacity", "font-size", "color",
    "background-color", "background-image", "clip", "clip-path", "left", "top",
    "margin-left", "margin-top", "text-indent", "transform", "translate", "scale",
    "width", "height", "max-width", "max-height", "overflow", "overflow-x", "overflow-y",
})  # fmt: skip
# Shorthands read for the longhands above.
SHORTHANDS = frozenset({"font", "background", "margin"})
_CALL = re.compile(r"((?<![a-z-])[a-z-]+\([^()]*\))")


def parse_declarations(text: str) -> Declarations:
    """The relevant declarations of a block or a ``style`` attribute: property ->
    (lower-cased value, important); shorthands become the longhands read here."""
    found: Declarations = {}
    for item in split_top(text, ";"):
        name, colon, value = item.partition(":")
        if not colon:
            continue
        name = unescape(name.strip()).lower()
        if name not in PROPERTIES and name not in SHORTHANDS:
            continue
        value, important = _importance(" ".join(unescape(value).lower().split()))
        for longhand, longvalue in _longhands(name, value):
            if not longvalue:
                continue
            # A later declaration wins unless an earlier one is important and it is not.
            if longhand in found and found[longhand][1] and not important:
                continue
            found[longhand] = (longvalue, important)
    return found


def _importance(value: str) -> tuple[str, bool]:
    """A value without its ``!important``, and whether it had one."""
    head, bang, tail = value.rpartition("!")
    if bang and tail.strip() == "important":
        return head.strip(), True
    return value, False


def _longhands(name: str, value: str) -> Iterable[tuple[str, str]]:
    if name == "font":
        yield "font-size", _font_size_of_shorthand(value)
    elif name == "background":
        yield "background-color", _background_colour_text(value)
    elif name == "margin":
        values = value.split()
        if values:
            yield "margin-top", values[0]
            yield "margin-left", values[{1: 0, 2: 1, 3: 1}.get(len(values), 3)]
    else:
        yield name, value


def _font_size_of_shorthand(value: str) -> str:
    if value in KEYWORDS:
        return value
    for token in value.replace("/", " / ").split():
        if token == "/":
            return ""
        if is_font_size(token):
            return token
    return ""


def _background_colour_text(value: str) -> str:
    """The colour in a ``background`` shorthand; "unknown" where an image may lie under the
    text (its colour cannot be judged) and "transparent" where there is none."""
    if value in KEYWORDS:
        return value
    if "url(" in value or "gradient(" in value or "image(" in value or "var(" in value:
        return "unknown"
    for token in _colour_tokens(value):
        if parse_colour(token) is not None:
            return token
    return "transparent"


def _colour_tokens(value: str) -> list[str]:
    tokens: list[str] = []
    for piece in _CALL.split(value):
        if "(" in piece:
            tokens.append(piece)
        else:
            tokens.extend(piece.split())
    return tokens
