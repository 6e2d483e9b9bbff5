"""Reading a selector's text into a :class:`Selector`. What is not supported is read so
that the selector matches more, never less (``exact`` turns False); what needs a state a
loaded page is not in, or selects a pseudo-element, never matches (None)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from retrieval.css.selectors import Attribute, Compound, Nth, Selector
from retrieval.css.syntax import read_group, read_ident, split_top, unescape

# States a page is not in when it loads: a rule that needs one does not apply.
_DYNAMIC = frozenset({
    "hover", "active", "focus", "focus-visible", "focus-within", "visited", "target",
    "target-within", "current", "past", "future", "playing", "paused", "user-invalid",
    "user-valid", "autofill", "-webkit-autofill", "popover-open", "modal", "fullscreen",
    "picture-in-picture", "drop", "local-link",
})  # fmt: skip
_PSEUDO_ELEMENTS = frozenset({"before", "after", "first-line", "first-letter", "marker"})
_ATTRIBUTE = re.compile(
    r"""\s*([^\s~|^$*!=\]"']+)\s*(?:([~|^$*]?=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"']+)"""
    r"""\s*([iIsS])?\s*)?\Z""",
    re.S,
)
_NTH = re.compile(r"\s*(?:(odd)|(even)|([+-]?\d*)n\s*(?:([+-])\s*(\d+))?|([+-]?\d+))\s*\Z")
_NTH_OF_TYPE = {"nth-child": False, "nth-of-type": True, "first-child": False,
                "first-of-type": True}  # fmt: skip
_WHITESPACE = " \t\n\r\f"
_ID, _CLASS, _TYPE = 0, 1, 2  # the places of specificity's three counts


def parse_selector(text: str, depth: int = 0) -> Selector | None:
    """One complex selector, or None where it never matches a loaded page's element (it
    needs a state such as ``:hover``, or selects a pseudo-element). ``depth``: how many
    ``:not()`` it is inside."""
    return _SelectorReader(text, depth).read()


@dataclass
class _Draft:
    """The compound selector being read."""

    tag: str | None = None
    ids: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    nots: list[tuple[Compound, ...]] = field(default_factory=list)
    root: bool = False
    nths: list[Nth] = field(default_factory=list)
    started: bool = False  # it says something (a lone combinator starts no compound)

    def compound(self) -> Compound:
        return Compound(
            tag=self.tag,
            ids=tuple(self.ids),
            classes=tuple(self.classes),
            attributes=tuple(self.attributes),
            nots=tuple(self.nots),
            root=self.root,
            nths=tuple(self.nths),
        )


class _SelectorReader:
    """Reads one selector left to right, a simple selector or combinator at a time."""

    def __init__(self, text: str, depth: int) -> None:
        self.text, self.depth, self.index = text, depth, 0
        self.compounds: list[Compound] = []
        self.draft = _Draft()
        self.specificity = [0, 0, 0]
        self.exact = True

    def read(self) -> Selector | None:
        while self.index < len(self.text):
            if not self._step(self.text[self.index]):
                return None
        self._finish_compound()
        id_count, class_count, type_count = self.specificity
        return Selector(tuple(self.compounds), (id_count, class_count, type_count), self.exact)

    def _step(self, char: str) -> bool:
        """Reads what starts at ``char``; False where the selector can never match."""
        if char in _WHITESPACE:
            self._finish_compound()
            self.index += 1
        elif char in ">+~":
            self._combinator(char)
        elif char == "*":
            self.draft.started = True
            self.index += 1
        elif char in ".#":
            self._id_or_class(char)
        elif char == "[":
            self._attribute()
        elif char == ":":
            return self._pseudo()
        elif char in "&|," or (char == "\\" and self.index + 1 >= len(self.text)):
            self._widen()
            self.index += 1
        else:
            self._type()
        return True

    def _finish_compound(self) -> None:
        if self.draft.started:
            self.compounds.append(self.draft.compound())
        self.draft = _Draft()

    def _widen(self) -> None:
        self.exact = False

    def _combinator(self, char: str) -> None:
        # ``>`` is read as a descendant combinator: it only matches more.
        self._finish_compound()
        self._widen()
        if char != ">" and self.compounds:  # a sibling's selector says nothing of ancestors
            self.compounds.pop()
        self.index += 1

    def _id_or_class(self, char: str) -> None:
        name, self.index = read_ident(self.text, self.index + 1)
        if not name:
            self._widen()
            return
        self.draft.started = True
        if char == "#":
            self.draft.ids.append(name)
            self.specificity[_ID] += 1
        else:
            self.draft.classes.append(name)
            self.specificity[_CLASS] += 1

    def _attribute(self) -> None:
        inner, self.index = read_group(self.text, self.index + 1, "]")
        attribute = _parse_attribute(inner)
        self.specificity[_CLASS] += 1
        if attribute is None:
            self._widen()
        else:
            self.draft.started = True
            self.draft.attributes.append(attribute)

    def _type(self) -> None:
        name, after = read_ident(self.text, self.index)
        if not name:
            self._widen()
            self.index += 1
            return
        self.index = after
        self.draft.started = True
        self.draft.tag = name.lower()
        self.specificity[_TYPE] += 1

    def _pseudo(self) -> bool:
        """Reads a pseudo-class; False for a pseudo-element or a state such as ``:hover``."""
        if self.text.startswith("::", self.index):
            return False
        name, self.index = read_ident(self.text, self.index + 1)
        name = name.lower()
        arguments: str | None = None
        if self.index < len(self.text) and self.text[self.index] == "(":
            arguments, self.index = read_group(self.text, self.index + 1, ")")
        if name in _PSEUDO_ELEMENTS or name in _DYNAMIC:
            return False
        self.draft.started = True
        self._pseudo_class(name, arguments)
        return True

    def _pseudo_class(self, name: str, arguments: str | None) -> None:
        nth = _parse_nth(name, arguments) if name in _NTH_OF_TYPE else None
        if name == "root" and arguments is None:
            self.draft.root = True
            self.specificity[_CLASS] += 1
        elif nth is not None:
            self.draft.nths.append(nth)
            self.specificity[_CLASS] += 1
        elif name == "not" and arguments is not None:
            self._not(arguments)
        else:  # :is(), :has(), :checked, ...: read as matching anything
            self._widen()
            if name != "where":
                self.specificity[_CLASS] += 1

    def _not(self, arguments: str) -> None:
        group = _simple_list(arguments, self.depth)
        if group is None:  # more than compounds: read as matching anything
            self._widen()
            self.specificity[_CLASS] += 1
            return
        self.draft.nots.append(tuple(selector.compounds[0] for selector in group))
        best = max(selector.specificity for selector in group)
        self.specificity = [
            mine + theirs for mine, theirs in zip(self.specificity, best, strict=True)
        ]


def _simple_list(text: str, depth: int) -> list[Selector] | None:
    """The selectors of ``:not(...)`` where each is one exact compound; None otherwise."""
    if depth >= 2:
        return None
    selectors = []
    for part in split_top(text, ","):
        selector = parse_selector(part.strip(), depth + 1)
        if selector is None or not selector.exact or len(selector.compounds) != 1:
            return None
        selectors.append(selector)
    return selectors or None


def _parse_nth(name: str, arguments: str | None) -> Nth | None:
    of_type = _NTH_OF_TYPE[name]
    if name in ("first-child", "first-of-type"):
        return None if arguments is not None else (0, 1, of_type)
    if arguments is None or len(arguments) > 64:
        return None
    match = _NTH.match(arguments)
    if not match:
        return None
    odd, even, step, sign, offset, alone = match.groups()
    if odd:
        return (2, 1, of_type)
    if even:
        return (2, 0, of_type)
    if alone is not None:
        return (0, int(alone), of_type)
    count = {"": 1, "+": 1, "-": -1}.get(step)
    count = int(step) if count is None else count
    rest = int(offset or 0) * (-1 if sign == "-" else 1)
    return (count, rest, of_type)


def _parse_attribute(text: str) -> Attribute | None:
    match = _ATTRIBUTE.match(text)
    if not match:
        return None
    name, operator, value, flag = match.groups()
    if value and value[0] in "\"'":
        value = value[1:-1]
    return (
        unescape(name).lower(),
        operator or "",
        unescape(value or ""),
        (flag or "").lower() == "i",
    )
