"""Turning operator files into plain text with optional markdown structure.

.txt and .md are read as they are; .html is reduced to its text (headings become markdown
headings so chunks keep their section titles); .jsonl holds one document per line with
``id``, ``text`` (or ``markdown``/``html``), ``metadata`` and ``source``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from retrieval.errors import InvalidDocument

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".jsonl")


@dataclass(frozen=True)
class Document:
    id: str
    text: str  # plain text or markdown
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        payload = json.dumps([self.text, self.source, self.metadata], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def decode_text(raw: bytes, where: str) -> str:
    """UTF-8 text or a clear refusal; NUL bytes mark binary files that happen to decode."""
    if b"\x00" in raw:
        raise InvalidDocument(f"{where} looks binary (it contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDocument(
            f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None


def html_to_markdown(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.text()


def from_fields(
    doc_id: str,
    *,
    text: str | None = None,
    markdown: str | None = None,
    html: str | None = None,
    source: str = "",
    metadata: dict[str, Any] | None = None,
) -> Document:
    given = [value for value in (text, markdown, html) if value is not None]
    if len(given) != 1:
        raise InvalidDocument("give exactly one of text, markdown or html")
    body = html_to_markdown(html) if html is not None else given[0]
    if not body.strip():
        raise InvalidDocument(f"document {doc_id!r} is empty")
    return Document(id=doc_id, text=body, source=source or doc_id, metadata=metadata or {})


def read_path(path: Path, root: Path) -> Iterator[Document]:
    """Documents in one file; ids are the path relative to the ingested root."""
    relative = path.relative_to(root).as_posix() if path != root else path.name
    text = decode_text(path.read_bytes(), str(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(text, relative)
    elif suffix in (".html", ".htm"):
        yield from_fields(relative, html=text, source=relative)
    else:
        yield from_fields(relative, text=text, source=relative)


def iter_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and path.suffix.lower() in SUPPORTED_SUFFIXES
    )


def _read_jsonl(text: str, relative: str) -> Iterator[Document]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidDocument(f"{relative}:{number}: invalid JSON ({exc.msg})") from None
        try:
            yield _from_record(record, f"{relative}#{number}", relative)
        except InvalidDocument as exc:
            raise InvalidDocument(f"{relative}:{number}: {exc.message}") from None


def _from_record(record: object, default_id: str, default_source: str) -> Document:
    if not isinstance(record, dict):
        raise InvalidDocument("each line must be a JSON object")
    bodies = {key: record.get(key) for key in ("text", "markdown", "html")}
    for key, value in bodies.items():
        if value is not None and not isinstance(value, str):
            raise InvalidDocument(f"{key} must be a string", param=key)
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidDocument("metadata must be an object", param="metadata")
    doc_id = record.get("id")
    return from_fields(
        default_id if doc_id is None or doc_id == "" else str(doc_id),
        text=bodies["text"],
        markdown=bodies["markdown"],
        html=bodies["html"],
        source=str(record.get("source") or default_source),
        metadata=metadata,
    )


class _HtmlText(HTMLParser):
    """The text a reader sees. Dropped: scripts, styles and templates, and any element a
    browser does not show (the ``hidden`` attribute, an inline ``display: none`` or
    ``visibility: hidden``), which would otherwise ground answers on text planted where no
    reviewer looks. Styles from stylesheets and classes are not evaluated."""

    _SKIP = frozenset({"script", "style", "noscript", "template"})
    _BLOCKS = frozenset({"p", "div", "li", "br", "tr", "section", "article", "pre", "table"})
    # Elements without an end tag: hiding one hides no text, and waiting for its end tag
    # would hide the rest of the document.
    _VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                       "meta", "source", "track", "wbr"})  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping = 0
        self._in_heading = False
        self._hidden: list[list[Any]] = []  # [tag, depth] of each open hidden element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden:
            if tag == self._hidden[-1][0]:
                self._hidden[-1][1] += 1  # the same tag nested inside: its end is not ours
            return
        if tag not in self._VOID and _hides(attrs):
            self._hidden.append([tag, 1])
        elif tag in self._SKIP:
            self._skipping += 1
        elif _is_heading(tag):
            self._in_heading = True
            self._parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self._parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._hidden:
            if tag == self._hidden[-1][0]:
                self._hidden[-1][1] -= 1
                if not self._hidden[-1][1]:
                    self._hidden.pop()
            return
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif _is_heading(tag) or tag in self._BLOCKS:
            self._in_heading = False
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping or self._hidden:
            return
        # A pretty-printed <h2>\n  Title\n</h2> must stay one heading line.
        self._parts.append(" ".join(data.split()) if self._in_heading else data)

    def text(self) -> str:
        lines = [" ".join(line.split()) for line in "".join(self._parts).splitlines()]
        collapsed: list[str] = []
        for line in lines:
            if line or (collapsed and collapsed[-1]):
                collapsed.append(line)
        return "\n".join(collapsed).strip()


def _hides(attrs: list[tuple[str, str | None]]) -> bool:
    for name, value in attrs:
        if name == "hidden":
            return True
        if name == "style" and value:
            style = "".join(value.lower().split())
            if "display:none" in style or "visibility:hidden" in style:
                return True
    return False


def _is_heading(tag: str) -> bool:
    return len(tag) == 2 and tag[0] == "h" and tag[1] in "123456"
