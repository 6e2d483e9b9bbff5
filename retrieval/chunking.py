"""Token-aware chunking with overlap; markdown is split on headings first.

Token counts come from the embedding model's own tokenizer (passed in as a function giving
the character span of each token), so a chunk never exceeds what the embedder reads. Each
chunk remembers its section: the heading path above it, e.g. ``Refunds > Late returns``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.sections import ChunkingConfig

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]

_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    section: str
    text: str

    def embedding_text(self) -> str:
        # The section title carries meaning the chunk text may lack ("Refunds" above a
        # paragraph that never says the word), so it is embedded with the text.
        return f"{self.section}\n{self.text}" if self.section else self.text


def split_sections(markdown: str) -> list[tuple[str, str]]:
    """(heading path, body) pairs; text before the first heading has an empty path."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    path: list[tuple[int, str]] = []
    in_fence = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _heading(line)
        if heading is None:
            sections[-1][1].append(line)
            continue
        level, title = heading
        path = [(depth, name) for depth, name in path if depth < level] + [(level, title)]
        sections.append((" > ".join(name for _, name in path), []))
    joined = [(title, "\n".join(lines).strip()) for title, lines in sections]
    return [(title, body) for title, body in joined if body]


def _heading(line: str) -> tuple[int, str] | None:
    """(level, title) of an ATX heading line (``## Title ##``), else None.

    Parsed by hand, in one pass: the regex it replaces (``^(#{1,6})\\s+(.+?)(?:\\s+#+)?\\s*$``)
    backtracked quadratically on a ``#`` line padded with spaces (16k spaces took 5 s,
    holding the interpreter)."""
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or len(line) == level or not line[level].isspace():
        return None
    title = line[level:].strip()
    closed = title.rstrip("#")  # an optional closing run of #, after whitespace
    if closed and closed[-1].isspace():
        title = closed.rstrip()
    return (level, title) if title else None


def chunk_document(text: str, spans_of: TokenSpans, config: ChunkingConfig) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section, body in split_sections(text):
        for piece in _windows(body, spans_of(body), config):
            chunks.append(Chunk(ordinal=len(chunks), section=section, text=piece))
    return chunks


def _windows(body: str, spans: Sequence[tuple[int, int]], config: ChunkingConfig) -> list[str]:
    if len(spans) <= config.chunk_tokens:
        return [body]
    step = config.chunk_tokens - config.overlap_tokens
    pieces = []
    for first in range(0, len(spans), step):
        last = min(first + config.chunk_tokens, len(spans)) - 1
        start, end = _whole_words(body, spans, first, last)
        pieces.append(body[start:end].strip())
        if last == len(spans) - 1:
            break
    return [piece for piece in pieces if piece]


def _whole_words(
    body: str, spans: Sequence[tuple[int, int]], first: int, last: int
) -> tuple[int, int]:
    """Character range of tokens first..last, narrowed to whole words so no word is cut and
    the chunk never grows past its token budget. A window inside one long word (a URL, an
    id) keeps its raw token edges."""
    starts = [i for i in range(first, last + 1) if _starts_word(body, spans[i][0])]
    ends = [i for i in range(first, last + 1) if _ends_word(body, spans[i][1])]
    if starts and ends and starts[0] <= ends[-1]:
        return spans[starts[0]][0], spans[ends[-1]][1]
    return spans[first][0], spans[last][1]


def _starts_word(text: str, index: int) -> bool:
    return index == 0 or text[index - 1].isspace()


def _ends_word(text: str, index: int) -> bool:
    return index >= len(text) or text[index].isspace()
