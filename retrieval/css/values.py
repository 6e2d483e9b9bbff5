"""Reading property values: lengths, font sizes, plain numbers and colours."""

from __future__ import annotations

import colorsys
import math
import re

RGBA = tuple[float, float, float, float]

DEFAULT_FONT_PX = 16.0
KEYWORDS = frozenset({"inherit", "initial", "unset", "revert", "revert-layer"})

# Every pattern here is unambiguous, so a failed match costs one pass over the value.
_LENGTH = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)([a-z%]*)\Z")
FUNCTION = re.compile(r"(?<![a-z-])([a-z-]+)\(([^()]*)\)")
_UNIT_PX = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
            "mm": 96 / 25.4, "q": 96 / 101.6, "em": 16.0, "rem": 16.0, "ex": 8.0,
            "ch": 8.0, "vw": 19.2, "vh": 10.8, "vmin": 10.8, "vmax": 19.2}  # fmt: skip
_FONT_KEYWORDS = {"xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0,
                  "large": 18.0, "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0}  # fmt: skip


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


def number(value: str) -> float | None:
    """A plain number, or a percentage as a fraction."""
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        return None


# -- font sizes -------------------------------------------------------------------------


def is_font_size(token: str) -> bool:
    """Whether a token of the ``font`` shorthand is its size."""
    if token in _FONT_KEYWORDS or token in ("smaller", "larger"):
        return True
    match = _LENGTH.match(token)
    return bool(match and (match.group(2) or float(match.group(1)) == 0))


def font_px(value: str | None, parent_px: float) -> float:
    """The font size a ``font-size`` value gives; the parent's where it gives none."""
    if value is None or value in KEYWORDS:
        return parent_px
    size = parse_font_px(value, parent_px)
    return parent_px if size is None else size


def parse_font_px(value: str, parent_px: float) -> float | None:
    """The font size a ``font-size`` value gives; None where it is not read here."""
    if value in _FONT_KEYWORDS:
        return _FONT_KEYWORDS[value]
    if value == "smaller":
        return parent_px / 1.2
    if value == "larger":
        return parent_px * 1.2
    match = _LENGTH.match(value)
    if not match:
        return None
    size, unit = float(match.group(1)), match.group(2)
    if size == 0:
        return 0.0
    if unit in ("em", "%"):
        return size * parent_px / (100 if unit == "%" else 1)
    return length_px(value)


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
    """``#rgb[a]``, ``#rrggbb[aa]``, ``rgb[a]()``, ``hsl[a]()``, ``transparent`` and common
    names; None for anything else (which is then not judged)."""
    value = value.strip()
    if value == "transparent":
        return (0.0, 0.0, 0.0, 0.0)
    value = "#" + _NAMED[value] if value in _NAMED else value
    if value.startswith("#") and len(value) in (4, 5, 7, 9):
        return _hex_colour(value[1:])
    return _functional_colour(value)


def _hex_colour(digits: str) -> RGBA | None:
    if len(digits) <= 4:
        digits = "".join(char * 2 for char in digits)
    try:
        channels = [int(digits[index : index + 2], 16) for index in range(0, len(digits), 2)]
    except ValueError:
        return None
    alpha = channels[3] / 255 if len(channels) == 4 else 1.0
    return (float(channels[0]), float(channels[1]), float(channels[2]), alpha)


def _functional_colour(value: str) -> RGBA | None:
    match = FUNCTION.fullmatch(value)
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
    if not all(math.isfinite(channel) for channel in (*rgb, alpha)):
        return None
    return (rgb[0], rgb[1], rgb[2], min(max(alpha, 0.0), 1.0))


def _fraction(part: str, scale: float) -> float:
    """``50%`` or a number out of ``scale``, as a fraction in [0, 1]."""
    fraction = float(part[:-1]) / 100 if part.endswith("%") else float(part) / scale
    return min(max(fraction, 0.0), 1.0)


def seen_over(colour: RGBA, backdrop: RGBA) -> tuple[float, float, float]:
    """The channels a (partly transparent) ``colour`` shows over an opaque ``backdrop``."""
    alpha = colour[3]
    red, green, blue = (alpha * colour[index] + (1 - alpha) * backdrop[index] for index in range(3))
    return red, green, blue


def painted_over(colour: RGBA, backdrop: RGBA | None) -> RGBA | None:
    """The opaque colour of a background painted over ``backdrop``; None if not known."""
    if colour[3] >= 1:
        return colour
    if backdrop is None:
        return None
    return (*seen_over(colour, backdrop), 1.0)
