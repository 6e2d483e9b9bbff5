"""Reading CSS text: top-level splits, bracketed groups, identifiers and escapes. Strings
and escaped characters are skipped everywhere, so a quoted ``;`` or ``)`` never ends
anything."""

from __future__ import annotations

import re
from collections.abc import Iterator

_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(.))", re.S)


def structural(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, character) of each character of ``text`` from ``start`` that is neither in a
    string, nor a quote, nor escaped: the ones that can open, close or separate."""
    quote, index = "", start
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
        else:
            yield index, char
        index += 1


def split_top(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside strings, parentheses and brackets."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in structural(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char == separator and not depth:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def read_group(text: str, index: int, closer: str) -> tuple[str, int]:
    """The text up to the ``closer`` that ends a group opened before ``index``, and the
    index after it (nested brackets and strings skipped)."""
    opener = "(" if closer == ")" else "["
    depth = 1
    for position, char in structural(text, index):
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if not depth:
                return text[index:position], position + 1
    return text[index:], len(text)


def read_ident(text: str, index: int) -> tuple[str, int]:
    """The identifier that starts at ``index`` (escapes read), and the index after it."""
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
    return unescape(text[start:index]), index


def unescape(text: str) -> str:
    """CSS escapes (``\\64``, ``\\.``) read as the characters they stand for."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(_unescaped, text)


def _unescaped(match: re.Match[str]) -> str:
    if match.group(1):
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return match.group(2)
