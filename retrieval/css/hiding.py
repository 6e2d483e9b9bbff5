"""Which declared values hide an element, or its text, from a reader."""

from __future__ import annotations

from retrieval.css.values import (
    DEFAULT_FONT_PX,
    FUNCTION,
    RGBA,
    length_px,
    number,
    parse_font_px,
    seen_over,
)

MIN_FONT_PX = 2.0
OFF_SCREEN_PX = -999.0
MAX_OPACITY = 0.05
COLOUR_DISTANCE = 16  # of 255, in every channel
COLOUR_PROPERTIES = frozenset({"color", "background-color", "background-image"})
_OFFSETS = ("left", "top", "margin-left", "margin-top", "text-indent")
_OVERFLOWS = ("overflow", "overflow-x", "overflow-y")
_SIZES = ("width", "height", "max-width", "max-height")


def hides_alone(name: str, value: str) -> bool:
    """Whether this one declaration hides its element and all it contains."""
    if name == "display":
        return value == "none"
    if name == "visibility":
        return value in ("hidden", "collapse")
    if name == "content-visibility":
        return value == "hidden"
    if name == "opacity":
        return number(value) is not None and (number(value) or 0.0) <= MAX_OPACITY
    if name == "clip":
        return _tiny_rect(value)
    if name == "clip-path":
        return _clipped_away(value)
    if name in _OFFSETS:
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
        size = parse_font_px(value, DEFAULT_FONT_PX)
        return size is not None and size < MIN_FONT_PX
    if name in _OVERFLOWS:
        return _overflow_hidden(value)
    if name in _SIZES:
        return _at_most_a_pixel(value)
    return hides_alone(name, value)


def hidden_box(winners: dict[str, str]) -> bool:
    """Whether the winning declarations of an element hide it and all it contains."""
    if any(hides_alone(name, value) for name, value in winners.items()):
        return True
    if any(_overflow_hidden(winners[name]) for name in _OVERFLOWS if name in winners):
        return any(_at_most_a_pixel(winners.get(name, "")) for name in _SIZES)
    return False


def invisible_on(colour: RGBA, backdrop: RGBA | None) -> bool:
    """Whether text of ``colour`` can hardly be told from the ``backdrop`` behind it."""
    if colour[3] <= MAX_OPACITY:
        return True
    if backdrop is None:
        return False
    seen = seen_over(colour, backdrop)
    return all(abs(seen[index] - backdrop[index]) <= COLOUR_DISTANCE for index in range(3))


def _at_most_a_pixel(value: str) -> bool:
    size = length_px(value)
    return size is not None and size <= 1


def _overflow_hidden(value: str) -> bool:
    return any(part in ("hidden", "clip") for part in value.split())


def _tiny_rect(value: str) -> bool:
    match = FUNCTION.fullmatch(value)
    if not match or match.group(1) != "rect":
        return False
    sides = [length_px(part) for part in match.group(2).replace(",", " ").split()]
    if len(sides) != 4 or any(side is None for side in sides):
        return False
    top, right, bottom, left = (side or 0.0 for side in sides)
    return right - left <= 1 or bottom - top <= 1


def _clipped_away(value: str) -> bool:
    match = FUNCTION.match(value)
    if not match:
        return False
    kind = match.group(1)
    arguments = match.group(2).split(" round ")[0].split(" at ")[0].replace(",", " ").split()
    if kind == "inset":
        insets = [number(part) if part.endswith("%") else None for part in arguments]
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
        return any(number(part) == 0 for part in value.split())
    if name == "translate":
        return any(_off_screen(part) for part in value.split())
    for match in FUNCTION.finditer(value):
        function, arguments = match.group(1), match.group(2).replace(",", " ").split()
        if function in ("scale", "scalex", "scaley") and any(
            number(part) == 0 for part in arguments
        ):
            return True
        if function.startswith("translate") and any(_off_screen(part) for part in arguments):
            return True
    return False


def _off_screen(length: str) -> bool:
    return (length_px(length) or 0.0) <= OFF_SCREEN_PX
