"""Which elements of an HTML page a browser does not show, from its ``<style>`` blocks and
inline styles: enough CSS to keep hidden text out of grounding (docs/security.md, "Hidden
text in HTML"). Not a CSS engine; no CSS library is installed, so this is a small one.

What is evaluated: rules in ``<style>`` blocks and ``style`` attributes, with the cascade
(``!important``, inline, specificity, order) for the properties below. Selectors: type,
``*``, class, id, attribute selectors, ``:not()`` of simple selectors, ``:root``,
``:first-child``, ``:nth-child()``, ``:first-of-type``, ``:nth-of-type()``, and the
descendant combinator. Everything else is read so that it can only hide more, never less
("fail closed"): ``>`` is read as a descendant combinator, the left side of ``+``/``~`` and
unsupported pseudo-classes are dropped, and rules inside an ``@media`` that holds at only
some desktop widths (or tests a feature not known here), ``@supports``, ``@layer``,
``@container`` and nested rules count only where they hide. Such a loose rule never
un-hides; its text colour is not read, and its background only makes the colour behind the
text unknown. ``@media`` is judged for a desktop screen 1024 to 1920 px wide: print and
phone-only rules are skipped, rules for every such screen are read like any other. Rules
that match only in a state a page does not load in (``:hover``, ``:focus``, ...) and
pseudo-elements are ignored.

Hidden: ``display: none``, ``visibility: hidden|collapse``, ``content-visibility: hidden``,
``opacity`` at most 0.05, a ``clip`` rect or ``clip-path`` that leaves at most a pixel,
``transform``/``scale`` to zero, off-screen offsets (``left``, ``top``, ``margin-left``,
``margin-top``, ``text-indent`` or a translation of -999px or more), a box at most a pixel
wide or high with ``overflow`` hidden, a font under 2px (inherited, so a child with its own
size shows again) and text in (about) its background's colour or transparent.

Time is linear in the page: selectors are indexed by their id, a class or their tag, and
the progress of descendant selectors is kept per open element, so no element looks at its
ancestors again. Every comparison is charged to a budget that grows with the page; a page
that spends it is refused (:class:`TooComplex`) rather than ingested unevaluated.
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

RGBA = tuple[float, float, float, float]

WHITE: RGBA = (255.0, 255.0, 255.0, 1.0)
BLACK: RGBA = (0.0, 0.0, 0.0, 1.0)
DEFAULT_FONT_PX = 16.0
MIN_FONT_PX = 2.0
OFF_SCREEN_PX = -999.0
MAX_OPACITY = 0.05
COLOUR_DISTANCE = 16  # of 255, in every channel
MAX_NESTING = 32
MAX_SELECTOR = 4096


class TooComplex(Exception):
    """The page's stylesheets would take too long to evaluate."""


class Budget:
    def __init__(self, units: int) -> None:
        self.left = units

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise TooComplex("the page's stylesheets are too complex to evaluate")


# -- declarations -----------------------------------------------------------------------

PROPERTIES = frozenset({
    "display", "visibility", "content-visibility", "opacity", "font-size", "color",
    "background-color", "background-image", "clip", "clip-path", "left", "top",
    "margin-left", "margin-top", "text-indent", "transform", "translate", "scale",
    "width", "height", "max-width", "max-height", "overflow", "overflow-x", "overflow-y",
})  # fmt: skip
# Shorthands read for the longhands above.
SHORTHANDS = frozenset({"font", "background", "margin"})
COLOUR_PROPERTIES = frozenset({"color", "background-color", "background-image"})
KEYWORDS = frozenset({"inherit", "initial", "unset", "revert", "revert-layer"})

# Every pattern here is unambiguous, so a failed match costs one pass over the value.
_LENGTH = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)([a-z%]*)\Z")
_FUNCTION = re.compile(r"(?<![a-z-])([a-z-]+)\(([^()]*)\)")
_CALL = re.compile(r"((?<![a-z-])[a-z-]+\([^()]*\))")
_UNIT_PX = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
            "mm": 96 / 25.4, "q": 96 / 101.6, "em": 16.0, "rem": 16.0, "ex": 8.0,
            "ch": 8.0, "vw": 19.2, "vh": 10.8, "vmin": 10.8, "vmax": 19.2}  # fmt: skip
_FONT_KEYWORDS = {"xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0,
                  "large": 18.0, "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0}  # fmt: skip


def parse_declarations(text: str) -> dict[str, tuple[str, bool]]:
    """The relevant declarations of a block or a ``style`` attribute: property ->
    (lower-cased value, important); shorthands become the longhands read here."""
    found: dict[str, tuple[str, bool]] = {}
    for item in _split_top(text, ";"):
        name, colon, value = item.partition(":")
        if not colon:
            continue
        name = _unescape(name.strip()).lower()
        if name not in PROPERTIES and name not in SHORTHANDS:
            continue
        value = " ".join(_unescape(value).lower().split())
        important = False
        head, bang, tail = value.rpartition("!")
        if bang and tail.strip() == "important":
            value, important = head.strip(), True
        for longhand, longvalue in _longhands(name, value):
            if not longvalue:
                continue
            # A later declaration wins unless an earlier one is important and it is not.
            if longhand in found and found[longhand][1] and not important:
                continue
            found[longhand] = (longvalue, important)
    return found


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
        if token in _FONT_KEYWORDS or token in ("smaller", "larger"):
            return token
        match = _LENGTH.match(token)
        if match and (match.group(2) or float(match.group(1)) == 0):
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


def length_px(
    value: str, font_px: float = DEFAULT_FONT_PX, percent_of: float | None = None
) -> float | None:
    match = _LENGTH.match(value.strip())
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2)
    if number == 0:
        return 0.0
    if unit == "%":
        return None if percent_of is None else number * percent_of / 100
    if unit in ("em",):
        return number * font_px
    scale = _UNIT_PX.get(unit)
    return None if scale is None else number * scale


# -- colours ----------------------------------------------------------------------------

_NAMED = {
    "black": "000000", "white": "ffffff", "red": "ff0000", "lime": "00ff00",
    "green": "008000", "blue": "0000ff", "yellow": "ffff00", "cyan": "00ffff",
    "aqua": "00ffff", "magenta": "ff00ff", "fuchsia": "ff00ff", "gray": "808080",
    "grey": "808080", "silver": "c0c0c0", "maroon": "800000", "olive": "808000",
    "navy": "000080", "purple": "800080", "teal": "008080", "orange": "ffa500",
    "whitesmoke": "f5f5f5", "snow": "fffafa", "ivory": "fffff0", "ghostwhite": "f8f8ff",
    "floralwhite": "fffaf0", "azure": "f0ffff", "mintcream": "f5fffa",
    "lightgray": "d3d3d3", "lightgrey": "d3d3d3", "gainsboro": "dcdcdc",
    "darkgray": "a9a9a9", "darkgrey": "a9a9a9", "dimgray": "696969", "dimgrey": "696969",
    "aliceblue": "f0f8ff", "honeydew": "f0fff0", "lavenderblush": "fff0f5",
    "seashell": "fff5ee", "linen": "faf0e6", "oldlace": "fdf5e6", "beige": "f5f5dc",
    "canvas": "ffffff", "canvastext": "000000",  # system colours, as on a light page
}  # fmt: skip


def parse_colour(value: str) -> RGBA | None:
    """``#rgb[a]``, ``#rrggbb[aa]``, ``rgb[a]()``, ``transparent`` and common names; None
    for anything else (which is then not judged)."""
    value = value.strip()
    if value == "transparent":
        return (0.0, 0.0, 0.0, 0.0)
    value = "#" + _NAMED[value] if value in _NAMED else value
    if value.startswith("#") and len(value) in (4, 5, 7, 9):
        digits = value[1:]
        if len(digits) <= 4:
            digits = "".join(char * 2 for char in digits)
        try:
            channels = [int(digits[index : index + 2], 16) for index in range(0, len(digits), 2)]
        except ValueError:
            return None
        alpha = channels[3] / 255 if len(channels) == 4 else 1.0
        return (float(channels[0]), float(channels[1]), float(channels[2]), alpha)
    match = _FUNCTION.fullmatch(value)
    if not match or match.group(1) not in ("rgb", "rgba", "hsl", "hsla"):
        return None
    parts = match.group(2).replace("/", " ").replace(",", " ").split()
    if len(parts) not in (3, 4):
        return None
    try:
        if match.group(1).startswith("hsl"):
            hue = float(parts[0].removesuffix("deg")) / 360 % 1
            light, saturation = (_fraction(part, 100) for part in (parts[2], parts[1]))
            rgb = [channel * 255 for channel in colorsys.hls_to_rgb(hue, light, saturation)]
        else:
            rgb = [_fraction(part, 255) * 255 for part in parts[:3]]
        alpha = _fraction(parts[3], 1) if len(parts) == 4 else 1.0
    except ValueError:
        return None
    if not all(math.isfinite(number) for number in (*rgb, alpha)):
        return None
    return (rgb[0], rgb[1], rgb[2], min(max(alpha, 0.0), 1.0))


def _fraction(part: str, scale: float) -> float:
    """``50%`` or a number out of ``scale``, as a fraction in [0, 1]."""
    number = float(part[:-1]) / 100 if part.endswith("%") else float(part) / scale
    return min(max(number, 0.0), 1.0)


def invisible_on(colour: RGBA, backdrop: RGBA | None) -> bool:
    if colour[3] <= MAX_OPACITY:
        return True
    if backdrop is None:
        return False
    alpha = colour[3]
    seen = [alpha * colour[index] + (1 - alpha) * backdrop[index] for index in range(3)]
    return all(abs(seen[index] - backdrop[index]) <= COLOUR_DISTANCE for index in range(3))


# -- which values hide ------------------------------------------------------------------


def hides_alone(name: str, value: str) -> bool:
    """Whether this one declaration hides its element and all it contains."""
    if name == "display":
        return value == "none"
    if name == "visibility":
        return value in ("hidden", "collapse")
    if name == "content-visibility":
        return value == "hidden"
    if name == "opacity":
        return _number(value) is not None and (_number(value) or 0.0) <= MAX_OPACITY
    if name == "clip":
        return _tiny_rect(value)
    if name == "clip-path":
        return _clipped_away(value)
    if name in ("left", "top", "margin-left", "margin-top", "text-indent"):
        offset = length_px(value)
        return offset is not None and offset <= OFF_SCREEN_PX
    if name in ("transform", "translate", "scale"):
        return _transformed_away(name, value)
    return False


def leans_hidden(name: str, value: str) -> bool:
    """Whether a declaration pushes towards hiding: the only ones a loose rule keeps."""
    if name in COLOUR_PROPERTIES:
        return False
    if name == "font-size":
        size = _font_px(value, DEFAULT_FONT_PX)
        return size is not None and size < MIN_FONT_PX
    if name in ("overflow", "overflow-x", "overflow-y"):
        return _overflow_hidden(value)
    if name in ("width", "height", "max-width", "max-height"):
        size = length_px(value)
        return size is not None and size <= 1
    return hides_alone(name, value)


def hidden_box(winners: dict[str, str]) -> bool:
    """Whether the winning declarations of an element hide it and all it contains."""
    for name, value in winners.items():
        if hides_alone(name, value):
            return True
    if any(
        _overflow_hidden(winners[name])
        for name in ("overflow", "overflow-x", "overflow-y")
        if name in winners
    ):
        for name in ("width", "height", "max-width", "max-height"):
            size = length_px(winners.get(name, ""))
            if size is not None and size <= 1:
                return True
    return False


def font_px(value: str | None, parent_px: float) -> float:
    if value is None or value in KEYWORDS:
        return parent_px
    size = _font_px(value, parent_px)
    return parent_px if size is None else size


def _font_px(value: str, parent_px: float) -> float | None:
    if value in _FONT_KEYWORDS:
        return _FONT_KEYWORDS[value]
    if value == "smaller":
        return parent_px / 1.2
    if value == "larger":
        return parent_px * 1.2
    match = _LENGTH.match(value)
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2)
    if number == 0:
        return 0.0
    if unit in ("em", "%"):
        return number * parent_px / (100 if unit == "%" else 1)
    return length_px(value)


def _number(value: str) -> float | None:
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        return None


def _overflow_hidden(value: str) -> bool:
    return any(part in ("hidden", "clip") for part in value.split())


def _tiny_rect(value: str) -> bool:
    match = _FUNCTION.fullmatch(value)
    if not match or match.group(1) != "rect":
        return False
    sides = [length_px(part) for part in match.group(2).replace(",", " ").split()]
    if len(sides) != 4 or any(side is None for side in sides):
        return False
    top, right, bottom, left = (side or 0.0 for side in sides)
    return right - left <= 1 or bottom - top <= 1


def _clipped_away(value: str) -> bool:
    match = _FUNCTION.match(value)
    if not match:
        return False
    kind = match.group(1)
    arguments = match.group(2).split(" round ")[0].split(" at ")[0].replace(",", " ").split()
    if kind == "inset":
        insets = [_number(part) if part.endswith("%") else None for part in arguments]
        values = [inset for inset in insets if inset is not None]
        return bool(values) and len(values) == len(insets) and _insets_meet(values)
    if kind in ("circle", "ellipse"):
        return any(length_px(part) == 0 for part in arguments[:2])
    return False


def _insets_meet(insets: list[float]) -> bool:
    top, right, bottom, left = (insets * 4)[:4] if len(insets) == 1 else _four(insets)
    return top + bottom >= 1 or right + left >= 1


def _four(values: list[float]) -> tuple[float, float, float, float]:
    if len(values) == 2:
        return values[0], values[1], values[0], values[1]
    if len(values) == 3:
        return values[0], values[1], values[2], values[1]
    return values[0], values[1], values[2], values[3]


def _transformed_away(name: str, value: str) -> bool:
    if name == "scale":
        return any(_number(part) == 0 for part in value.split())
    if name == "translate":
        return any((length_px(part) or 0.0) <= OFF_SCREEN_PX for part in value.split())
    for match in _FUNCTION.finditer(value):
        function, arguments = match.group(1), match.group(2).replace(",", " ").split()
        if function in ("scale", "scalex", "scaley") and any(
            _number(part) == 0 for part in arguments
        ):
            return True
        if function.startswith("translate") and any(
            (length_px(part) or 0.0) <= OFF_SCREEN_PX for part in arguments
        ):
            return True
    return False


def _split_top(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside strings, parentheses and brackets."""
    parts: list[str] = []
    depth, quote, start, index = 0, "", 0, 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "\\":
            index += 1
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char == separator and not depth:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    """CSS escapes (``\\64``, ``\\.``) read as the characters they stand for."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(_unescaped, text)


_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(.))", re.S)


def _unescaped(match: re.Match[str]) -> str:
    if match.group(1):
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return match.group(2)


# -- selectors --------------------------------------------------------------------------

Attribute = tuple[str, str, str, bool]  # name, operator ("" = present), value, ignore case
Key = tuple[str, str]

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


@dataclass(frozen=True)
class Element:
    tag: str
    id: str | None
    classes: frozenset[str]
    attributes: dict[str, str]
    position: tuple[int, int] = (1, 1)  # among its parent's elements, and those of its tag

    @classmethod
    def of(
        cls, tag: str, attrs: list[tuple[str, str | None]], position: tuple[int, int] = (1, 1)
    ) -> Element:
        attributes: dict[str, str] = {}
        for name, value in attrs:
            attributes.setdefault(name, value or "")
        return cls(
            tag,
            attributes.get("id"),
            frozenset(attributes.get("class", "").split()),
            attributes,
            position,
        )

    def index_keys(self) -> list[Key]:
        keys: list[Key] = [("*", ""), ("t", self.tag)]
        if self.id is not None:
            keys.append(("#", self.id))
        keys.extend((".", name) for name in self.classes)
        return keys


@dataclass(frozen=True)
class Compound:
    tag: str | None = None
    ids: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    nots: tuple[tuple[Compound, ...], ...] = ()
    root: bool = False
    nths: tuple[tuple[int, int, bool], ...] = ()  # an+b, of its tag only

    @property
    def key(self) -> Key:
        if self.ids:
            return ("#", self.ids[0])
        if self.classes:
            return (".", self.classes[0])
        if self.tag is not None:
            return ("t", self.tag)
        return ("*", "")

    def matches(self, element: Element, budget: Budget) -> bool:
        budget.spend(1 + len(self.ids) + len(self.classes) + len(self.attributes))
        if self.tag is not None and self.tag != element.tag:
            return False
        if self.root and element.tag != "html":
            return False
        for step, offset, of_type in self.nths:
            if not _nth(element.position[1 if of_type else 0], step, offset):
                return False
        if any(element.id != name for name in self.ids):
            return False
        if any(name not in element.classes for name in self.classes):
            return False
        for name, operator, value, ignore_case in self.attributes:
            actual = element.attributes.get(name)
            if actual is None:
                return False
            budget.spend(len(actual) // 64)
            if not _attribute_matches(actual, operator, value, ignore_case):
                return False
        return not any(
            compound.matches(element, budget) for group in self.nots for compound in group
        )


def _nth(position: int, step: int, offset: int) -> bool:
    """Whether ``position`` is ``step * n + offset`` for some n >= 0."""
    if step == 0:
        return position == offset
    return (position - offset) % step == 0 and (position - offset) // step >= 0


_NTH = re.compile(r"\s*(?:(odd)|(even)|([+-]?\d*)n\s*(?:([+-])\s*(\d+))?|([+-]?\d+))\s*\Z")
_NTH_NAMES = {"nth-child": False, "nth-of-type": True, "first-child": False,
              "first-of-type": True}  # fmt: skip


def _parse_nth(name: str, arguments: str | None) -> tuple[int, int, bool] | None:
    if name in ("first-child", "first-of-type"):
        return None if arguments is not None else (0, 1, _NTH_NAMES[name])
    if arguments is None or len(arguments) > 64:
        return None
    match = _NTH.match(arguments)
    if not match:
        return None
    odd, even, step, sign, offset, alone = match.groups()
    if odd:
        return (2, 1, _NTH_NAMES[name])
    if even:
        return (2, 0, _NTH_NAMES[name])
    if alone is not None:
        return (0, int(alone), _NTH_NAMES[name])
    count = {"": 1, "+": 1, "-": -1}.get(step)
    count = int(step) if count is None else count
    rest = int(offset or 0) * (-1 if sign == "-" else 1)
    return (count, rest, _NTH_NAMES[name])


def _attribute_matches(actual: str, operator: str, value: str, ignore_case: bool) -> bool:
    if ignore_case:
        actual, value = actual.lower(), value.lower()
    if operator == "":
        return True
    if operator == "=":
        return actual == value
    if operator == "~=":
        return bool(value) and value in actual.split()
    if operator == "|=":
        return actual == value or actual.startswith(value + "-")
    if not value:
        return False
    if operator == "^=":
        return actual.startswith(value)
    if operator == "$=":
        return actual.endswith(value)
    return value in actual  # *=


@dataclass(frozen=True)
class Selector:
    compounds: tuple[Compound, ...]
    specificity: tuple[int, int, int]
    exact: bool  # False where it was widened (it may match more elements than a browser's)


def parse_selector(text: str, depth: int = 0) -> Selector | None:
    """One complex selector, or None where it never matches a loaded page's element (it
    needs a state such as ``:hover``, or selects a pseudo-element)."""
    compounds: list[Compound] = []
    parts: dict[str, list[object]] = _empty_parts()
    tag: list[str | None] = [None]
    root = [False]
    nths: list[tuple[int, int, bool]] = []
    started = [False]
    exact = True
    specificity = [0, 0, 0]

    def finish() -> None:
        if started[0]:
            compounds.append(
                Compound(
                    tag=tag[0],
                    ids=tuple(str(item) for item in parts["ids"]),
                    classes=tuple(str(item) for item in parts["classes"]),
                    attributes=tuple(parts["attributes"]),  # type: ignore[arg-type]
                    nots=tuple(parts["nots"]),  # type: ignore[arg-type]
                    root=root[0],
                    nths=tuple(nths),
                )
            )
        parts.update(_empty_parts())
        nths.clear()
        tag[0], root[0], started[0] = None, False, False

    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char in " \t\n\r\f":
            finish()
            index += 1
        elif char in ">+~":
            finish()
            exact = False
            if char != ">" and compounds:  # a sibling's selector says nothing of ancestors
                compounds.pop()
            index += 1
        elif char == "*":
            started[0] = True
            index += 1
        elif char in ".#":
            name, index = _read_ident(text, index + 1)
            if not name:
                exact = False
                continue
            started[0] = True
            parts["classes" if char == "." else "ids"].append(name)
            specificity[0 if char == "#" else 1] += 1
        elif char == "[":
            inner, index = _read_group(text, index + 1, "]")
            attribute = _parse_attribute(inner)
            specificity[1] += 1
            if attribute is None:
                exact = False
            else:
                started[0] = True
                parts["attributes"].append(attribute)
        elif char == ":":
            if text.startswith("::", index):
                return None
            name, index = _read_ident(text, index + 1)
            name = name.lower()
            arguments: str | None = None
            if index < length and text[index] == "(":
                arguments, index = _read_group(text, index + 1, ")")
            if name in _PSEUDO_ELEMENTS or name in _DYNAMIC:
                return None
            started[0] = True
            nth = _parse_nth(name, arguments) if name in _NTH_NAMES else None
            if name == "root" and arguments is None:
                root[0] = True
                specificity[1] += 1
            elif nth is not None:
                nths.append(nth)
                specificity[1] += 1
            elif name == "not" and arguments is not None:
                group = _simple_list(arguments, depth)
                if group is None:
                    exact = False
                    specificity[1] += 1
                else:
                    parts["nots"].append(tuple(selector.compounds[0] for selector in group))
                    best = max(selector.specificity for selector in group)
                    specificity = [a + b for a, b in zip(specificity, best, strict=True)]
            else:  # :is(), :has(), :nth-child(), :checked, ...: read as matching anything
                exact = False
                if name != "where":
                    specificity[1] += 1
        elif char in "&|," or (char == "\\" and index + 1 >= length):
            exact = False
            index += 1
        else:
            name, after = _read_ident(text, index)
            if not name:
                exact = False
                index += 1
                continue
            index = after
            started[0] = True
            tag[0] = name.lower()
            specificity[2] += 1
    finish()
    return Selector(tuple(compounds), (specificity[0], specificity[1], specificity[2]), exact)


def _empty_parts() -> dict[str, list[object]]:
    return {"ids": [], "classes": [], "attributes": [], "nots": []}


def _simple_list(text: str, depth: int) -> list[Selector] | None:
    """The selectors of ``:not(...)`` where each is one exact compound; None otherwise."""
    if depth >= 2:
        return None
    selectors = []
    for part in _split_top(text, ","):
        selector = parse_selector(part.strip(), depth + 1)
        if selector is None or not selector.exact or len(selector.compounds) != 1:
            return None
        selectors.append(selector)
    return selectors or None


def _read_ident(text: str, index: int) -> tuple[str, int]:
    start = index
    while index < len(text):
        char = text[index]
        if char.isalnum() or char in "-_" or ord(char) > 127:
            index += 1
        elif char == "\\" and index + 1 < len(text):
            match = _ESCAPE.match(text, index)
            index = match.end() if match else index + 2
        else:
            break
    return _unescape(text[start:index]), index


def _read_group(text: str, index: int, closer: str) -> tuple[str, int]:
    """The text up to the ``closer`` that ends a group opened before ``index``, and the
    index after it (nested brackets and strings skipped)."""
    opener = "(" if closer == ")" else "["
    depth, quote, start = 1, "", index
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "\\":
            index += 1
        elif char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if not depth:
                return text[start:index], index + 1
        index += 1
    return text[start:], len(text)


def _parse_attribute(text: str) -> Attribute | None:
    match = _ATTRIBUTE.match(text)
    if not match:
        return None
    name, operator, value, flag = match.groups()
    if value and value[0] in "\"'":
        value = value[1:-1]
    return (
        _unescape(name).lower(),
        operator or "",
        _unescape(value or ""),
        (flag or "").lower() == "i",
    )


# -- stylesheets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    selector: Selector
    declarations: dict[str, tuple[str, bool]]
    order: int


@dataclass
class _Block:
    prelude: str
    items: list[str | _Block] = field(default_factory=list)


_CSS_TOKEN = re.compile(
    r"""/\*.*?(?:\*/|\Z)"""  # a comment, also one left open
    r"""|"(?:[^"\\]|\\.)*(?:"|\Z)|'(?:[^'\\]|\\.)*(?:'|\Z)"""  # a string
    r"""|\\.|[{};]|[^{};"'/\\]+|[/\\]""",
    re.S,
)
_LOOSE_AT_RULES = frozenset({"supports", "layer", "container", "scope", "document",
                             "-moz-document"})  # fmt: skip


def parse_stylesheets(sheets: Iterable[tuple[str, bool]], budget: Budget) -> list[Rule]:
    """The rules of the stylesheets ``(text, loose)`` that touch what hides text; a loose
    sheet (one whose media may not apply) keeps only what hides."""
    rules: list[Rule] = []
    for text, loose in sheets:
        budget.spend(len(text) // 16)
        _collect(_blocks(text), loose, None, rules, budget)
    return rules


def _blocks(text: str) -> _Block:
    root = _Block("")
    stack = [root]
    pending: list[str] = []
    for match in _CSS_TOKEN.finditer(text):
        token = match.group()
        if token.startswith("/*"):
            pending.append(" ")
        elif token == "{":
            if len(stack) > MAX_NESTING:
                raise TooComplex("the page's stylesheets nest too deeply")
            block = _Block("".join(pending).strip())
            stack[-1].items.append(block)
            stack.append(block)
            pending = []
        elif token in ";}":
            if pending:
                stack[-1].items.append("".join(pending))
                pending = []
            if token == "}" and len(stack) > 1:
                stack.pop()
        else:
            pending.append(token)
    if pending:
        stack[-1].items.append("".join(pending))
    return root


def _collect(
    block: _Block, loose: bool, parents: list[str] | None, rules: list[Rule], budget: Budget
) -> None:
    for item in block.items:
        if isinstance(item, str):
            continue
        prelude = item.prelude
        if prelude.startswith("@"):
            name, _, condition = prelude[1:].partition(" ")
            name = _unescape(name).lower()
            if name == "media":
                state = media_state(condition)
                if state != NEVER:
                    _collect(item, loose or state != ALWAYS, parents, rules, budget)
            elif name in _LOOSE_AT_RULES:
                _collect(item, True, parents, rules, budget)
            continue
        selectors = [part.strip() for part in _split_top(prelude, ",")]
        if parents is not None:
            selectors = _nest(parents, selectors, budget)
        text = ";".join(part for part in item.items if isinstance(part, str))
        declarations = parse_declarations(text)
        if declarations:
            for selector_text in selectors:
                selector = parse_selector(selector_text)
                if selector is None:
                    continue
                kept = declarations
                if loose or not selector.exact:
                    kept = _loose(declarations)
                if kept:
                    rules.append(Rule(selector, kept, len(rules)))
        if any(isinstance(part, _Block) for part in item.items):
            # Nested rules: read as loose, so an approximate reading only hides more.
            _collect(item, True, selectors, rules, budget)


def _loose(declarations: dict[str, tuple[str, bool]]) -> dict[str, tuple[str, bool]]:
    """What a rule that may not apply keeps: what hides, and a background that makes the
    colour behind the text unknown (text is never judged invisible on a guess)."""
    kept = {name: value for name, value in declarations.items() if leans_hidden(name, value[0])}
    for name in ("background-color", "background-image"):
        if name in declarations:
            kept["background-color"] = ("unknown", declarations[name][1])
    return kept


def _nest(parents: list[str], selectors: list[str], budget: Budget) -> list[str]:
    nested = []
    for parent in parents:
        for selector in selectors:
            combined = selector.replace("&", parent) if "&" in selector else f"{parent} {selector}"
            budget.spend(len(combined) // 16 + 1)
            if len(combined) > MAX_SELECTOR:
                raise TooComplex("the page's nested style rules are too long")
            nested.append(combined)
    return nested


# How sure it is that a media query holds where reviewers read pages: a desktop screen
# 1024 to 1920 px wide and 600 to 1200 px high, with a mouse, in any colour scheme.
NEVER, SOMETIMES, ALWAYS = 0, 1, 2
WIDTHS = (1024.0, 1920.0)
HEIGHTS = (600.0, 1200.0)
_RANGE = re.compile(
    r"\s*(?:([^<>=]+?)\s*([<>]=?|=))?\s*(width|height)\s*(?:([<>]=?|=)\s*([^<>=]+?))?\s*\Z"
)
_ALWAYS_FEATURES = {"orientation": "landscape", "hover": "hover", "any-hover": "hover",
                    "pointer": "fine", "any-pointer": "fine", "scan": "progressive",
                    "update": "fast", "grid": "0"}  # fmt: skip


def media_state(condition: str) -> int:
    """Whether a media query list holds for such a screen: NEVER (print, phones only...),
    ALWAYS (``screen``, ``(min-width: 768px)``...) or SOMETIMES (at some widths, or a
    feature not known here)."""
    if not condition.strip():
        return ALWAYS
    states = [_query_state(query.strip()) for query in _split_top(condition.lower(), ",")]
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
    if " or " in query or "(not" in query.replace(" ", "") or query.count("(") > 8:
        state = min(state, SOMETIMES)
    else:
        for condition in _split_top(query, " ") if query else []:
            if condition in ("", "and"):
                continue
            if not (condition.startswith("(") and condition.endswith(")")):
                state = min(state, SOMETIMES)
                continue
            state = min(state, _feature_state(condition[1:-1]))
    if negate:
        return {ALWAYS: NEVER, NEVER: ALWAYS}.get(state, SOMETIMES)
    return state


def _feature_state(feature: str) -> int:
    if len(feature) > 200:
        return SOMETIMES
    name, colon, value = (part.strip() for part in feature.partition(":"))
    if colon:
        if name in _ALWAYS_FEATURES:
            return ALWAYS if value == _ALWAYS_FEATURES[name] else NEVER
        axis = name.removeprefix("min-").removeprefix("max-")
        if axis in ("width", "height") and name != axis:
            return _range_state(axis, ">=" if name.startswith("min-") else "<=", value)
        if name in ("width", "height"):
            return min(_range_state(name, ">=", value), _range_state(name, "<=", value))
        return SOMETIMES
    if name in ("hover", "pointer", "any-hover", "any-pointer", "color", "width", "height"):
        return ALWAYS
    match = _RANGE.match(feature)
    if not match or feature.count("width") + feature.count("height") != 1:
        return SOMETIMES
    before, first, axis, second, after = match.groups()
    state = ALWAYS
    mirror = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "="}
    if before is not None:  # 600px <= width: the same as width >= 600px
        state = min(state, _range_state(axis, mirror[first], before))
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


# -- the cascade over a page -----------------------------------------------------------


@dataclass
class State:
    """What an open element passes on to what it contains."""

    hidden: bool  # the element and all it contains are not shown
    font_px: float
    colour: RGBA | None  # None: not known
    backdrop: RGBA | None  # the colour behind its text; None: not known
    added: list[tuple[Key, tuple[int, int]]]
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
        # (rule, n): an open element and its ancestors matched the rule's first n compounds.
        self._waiting: dict[Key, dict[tuple[int, int], None]] = {}
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
        hidden = hidden or hidden_box(winners)
        font = font_px(winners.get("font-size"), parent.font_px)
        colour = parent.colour
        if "color" in winners and winners["color"] not in KEYWORDS:
            colour = parse_colour(winners["color"])
        backdrop = parent.backdrop
        if winners.get("background-image", "none") not in ("none", *KEYWORDS):
            backdrop = None  # text over a picture: its colour cannot be judged
        elif "background-color" in winners:
            value = winners["background-color"]
            painted = None if value == "unknown" else parse_colour(value)
            if value == "unknown" or (painted is None and value not in KEYWORDS):
                backdrop = None
            elif painted is not None and painted[3] > 0:
                backdrop = _over(painted, parent.backdrop)
        return State(hidden, font, colour, backdrop, added)

    def close(self, state: State) -> None:
        for key, progress in state.added:
            del self._waiting[key][progress]

    def _match(self, element: Element) -> tuple[list[Rule], list[tuple[Key, tuple[int, int]]]]:
        matched: list[Rule] = []
        advanced: list[tuple[int, int]] = []
        rules, budget, first, waiting = self._rules, self._budget, self._first, self._waiting
        for key in element.index_keys():
            budget.spend(1)
            starting = first.get(key)
            if starting:
                for number in starting:
                    self._step(element, number, 0, matched, advanced)
            going = waiting.get(key)
            if going:
                for number, done in going:
                    self._step(element, number, done, matched, advanced)
        added: list[tuple[Key, tuple[int, int]]] = []
        for number, done in advanced:
            key = rules[number].selector.compounds[done].key
            bucket = waiting.setdefault(key, {})
            if (number, done) not in bucket:
                bucket[(number, done)] = None
                added.append((key, (number, done)))
        return matched, added

    def _step(
        self,
        element: Element,
        number: int,
        done: int,
        matched: list[Rule],
        advanced: list[tuple[int, int]],
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
        best: dict[str, tuple[tuple[bool, bool, tuple[int, int, int], int], str]] = {
            name: ((False, False, (0, 0, 0), -1), value) for name, value in hints.items()
        }
        for rule in matched:
            self._budget.spend(len(rule.declarations))
            for name, (value, important) in rule.declarations.items():
                rank = (important, False, rule.selector.specificity, rule.order)
                if name not in best or rank > best[name][0]:
                    best[name] = (rank, value)
        if style:
            self._budget.spend(len(style) // 16)
            for name, (value, important) in parse_declarations(style).items():
                rank = (important, True, (0, 0, 0), 0)
                if name not in best or rank > best[name][0]:
                    best[name] = (rank, value)
        return {name: value for name, (_, value) in best.items()}


_COLOUR_ATTRIBUTES = {
    "font": {"color": "color"},
    "body": {"text": "color", "bgcolor": "background-color"},
    "table": {"bgcolor": "background-color"},
    "tr": {"bgcolor": "background-color"},
    "td": {"bgcolor": "background-color"},
    "th": {"bgcolor": "background-color"},
}


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


def _over(colour: RGBA, backdrop: RGBA | None) -> RGBA | None:
    if colour[3] >= 1:
        return colour
    if backdrop is None:
        return None
    alpha = colour[3]
    mixed = [alpha * colour[index] + (1 - alpha) * backdrop[index] for index in range(3)]
    return (mixed[0], mixed[1], mixed[2], 1.0)
