"""Turning operator files into plain text with optional markdown structure.

.txt and .md are read as they are; .html is reduced to its text (headings become markdown
headings so chunks keep their section titles); .jsonl holds one document per line with
``id``, ``text`` (or ``markdown``/``html``), ``metadata`` and ``source``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from retrieval import css
from retrieval.errors import InvalidDocument

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".jsonl")
# Work units (selector comparisons, declarations) one page may spend on its stylesheets.
HTML_BUDGET = 200_000
HTML_BUDGET_PER_CHAR = 1


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
    """The text of a page that a browser shows, headings as markdown headings. A page
    whose stylesheets would take too long to evaluate is refused, not ingested unread."""
    events = _Events()
    try:
        events.feed(_without_unfinished_markup(html))
        events.close()
    except AssertionError:  # html.parser on a malformed "<![" section
        raise InvalidDocument("the page is not HTML that can be read") from None
    budget = css.Budget(HTML_BUDGET + HTML_BUDGET_PER_CHAR * len(html))
    try:
        rules = css.parse_stylesheets(events.sheets, budget)
        return _HtmlText(css.Cascade(rules, budget)).render(events.items)
    except css.TooComplex as exc:
        raise InvalidDocument(f"{exc}; simplify its <style> blocks") from None


_TAG_OPENING = re.compile(r"<[a-zA-Z/!?]")


def _without_unfinished_markup(html: str) -> str:
    """The page without a comment or tag left open at its end. html.parser (CPython 3.11)
    rescans such an end once for every character in it (quadratic: 320 KB of ``<!--`` took
    52 s); a browser reads an unclosed comment as running to the end of the page and drops
    a tag cut off by it, so neither shows any text."""
    closed = html.rfind("-->")
    opened = html.find("<!--", closed + 3 if closed >= 0 else 0)
    if opened >= 0:
        html = html[:opened]
    tail = _TAG_OPENING.search(html, html.rfind(">") + 1)
    return html[: tail.start()] if tail else html


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


class _Events(HTMLParser):
    """A page as a flat list of start tags, end tags and text, and its stylesheets.

    Two passes because a ``<style>`` anywhere in the page (even after the text it hides)
    applies to all of it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[tuple[str, str, list[tuple[str, str | None]]]] = []
        self.sheets: list[tuple[str, bool]] = []
        self._inert = 0  # open <template> and <noscript>: their styles never apply
        self._sheet: list[str] | None = None
        self._loose = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.items.append(("start", tag, attrs))
        if tag in ("template", "noscript"):
            self._inert += 1
        elif tag == "style" and not self._inert:
            named = {name: (value or "").strip().lower() for name, value in attrs}
            state = css.media_state(named["media"]) if named.get("media") else css.ALWAYS
            if named.get("type", "text/css") in ("", "text/css") and state != css.NEVER:
                self._sheet, self._loose = [], state != css.ALWAYS

    def handle_endtag(self, tag: str) -> None:
        self.items.append(("end", tag, []))
        if tag in ("template", "noscript") and self._inert:
            self._inert -= 1
        elif tag == "style" and self._sheet is not None:
            self.sheets.append(("".join(self._sheet), self._loose))
            self._sheet = None

    def handle_data(self, data: str) -> None:
        if self._sheet is not None:
            self._sheet.append(data)
        self.items.append(("data", data, []))

    def close(self) -> None:
        super().close()
        if self._sheet is not None:  # a <style> never closed runs to the end of the page
            self.sheets.append(("".join(self._sheet), self._loose))
            self._sheet = None


class _HtmlText:
    """The text a reader sees. Dropped, with all they contain: scripts, styles, templates,
    ``<noscript>`` (a browser with scripts on, as a reviewer's is, does not show it), a
    ``<dialog>`` that is not open, elements with the ``hidden`` attribute, and whatever
    the page's stylesheets and inline styles hide (package ``retrieval.css``); text planted
    where no reviewer sees it would otherwise ground answers. ``aria-hidden`` text is kept: it
    is on the screen, only hidden from screen readers."""

    _SKIP = frozenset({"script", "style", "noscript", "template"})
    # What a browser's own stylesheet hides (or, for an <iframe>, replaces).
    _NOT_RENDERED = frozenset({"datalist", "iframe", "noembed", "noframes", "rp"})
    _BLOCKS = frozenset({"p", "div", "li", "br", "tr", "section", "article", "pre", "table"})
    # Elements without an end tag: they hold no text and are never left open.
    _VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                       "meta", "source", "track", "wbr", "param", "keygen"})  # fmt: skip
    # HTML's implied end tags: a start tag that ends an open element (a <p>, an <li>, a
    # table cell...) even with inline elements still open inside it, unless one of the
    # "stops" lies between. Only the innermost few open elements are looked at, so a page
    # cannot make every start tag walk a deep stack.
    _CLOSES_P = frozenset({"address", "article", "aside", "blockquote", "center", "details",
                           "dialog", "dir", "div", "dl", "fieldset", "figcaption", "figure",
                           "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
                           "hgroup", "hr", "listing", "main", "menu", "nav", "ol", "p",
                           "pre", "search", "section", "summary", "table", "ul", "xmp",
                           "li", "dd", "dt"})  # fmt: skip
    _P_STOPS = frozenset({"applet", "button", "caption", "html", "marquee", "object", "table",
                          "td", "th", "template"})  # fmt: skip
    _LIST_STOPS = frozenset({"applet", "blockquote", "body", "button", "caption", "details",
                             "dl", "fieldset", "figure", "footer", "form", "header", "html",
                             "main", "marquee", "menu", "nav", "object", "ol", "section",
                             "table", "td", "template", "th", "ul"})  # fmt: skip
    _CLOSES = {
        "li": (("li",), _LIST_STOPS), "dt": (("dt", "dd"), _LIST_STOPS),
        "dd": (("dt", "dd"), _LIST_STOPS), "td": (("td", "th"), frozenset({"table", "tr"})),
        "th": (("td", "th"), frozenset({"table", "tr"})), "tr": (("tr",), frozenset({"table"})),
        "option": (("option",), frozenset({"select", "datalist", "optgroup"})),
    }  # fmt: skip
    _IMPLIED_REACH = 64

    def __init__(self, cascade: css.Cascade) -> None:
        self._cascade = cascade
        self._parts: list[str] = []
        self._in_heading = False
        self._open: list[tuple[str, css.State]] = []
        self._counts: dict[str, int] = {}
        # Per open element (and the page itself, first): how many elements, and of each
        # tag, it holds so far, for :nth-child() and :nth-of-type().
        self._children: list[tuple[list[int], dict[str, int]]] = [([0], {})]

    def render(self, items: list[tuple[str, str, list[tuple[str, str | None]]]]) -> str:
        for kind, value, attrs in items:
            if kind == "start":
                self._start(value, attrs)
            elif kind == "end":
                self._end(value)
            elif self._state.text_shown:
                # A pretty-printed <h2>\n  Title\n</h2> must stay one heading line.
                self._parts.append(" ".join(value.split()) if self._in_heading else value)
        return self._text()

    @property
    def _state(self) -> css.State:
        return self._open[-1][1] if self._open else self._cascade.root

    def _start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._CLOSES_P:
            self._close_implied(("p",), self._P_STOPS)
        if tag in self._CLOSES:
            self._close_implied(*self._CLOSES[tag])
        count, of_tag = self._children[-1]
        count[0] += 1
        of_tag[tag] = of_tag.get(tag, 0) + 1
        position = (count[0], of_tag[tag])
        if tag in self._VOID:
            if tag == "br" and not self._state.hidden:
                self._parts.append("\n")
            return
        names = {name for name, _ in attrs}
        forced = (
            tag in self._SKIP
            or tag in self._NOT_RENDERED
            or "hidden" in names
            or (tag == "dialog" and "open" not in names)
        )
        state = self._cascade.open(self._state, tag, attrs, forced, position)
        self._open.append((tag, state))
        self._children.append(([0], {}))
        self._counts[tag] = self._counts.get(tag, 0) + 1
        if state.hidden:
            return
        if _is_heading(tag):
            self._in_heading = True
            self._parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self._parts.append("\n")

    def _close_implied(self, targets: tuple[str, ...], stops: frozenset[str]) -> None:
        if not any(self._counts.get(target) for target in targets):
            return
        for index in range(
            len(self._open) - 1, max(len(self._open) - self._IMPLIED_REACH, 0) - 1, -1
        ):
            tag = self._open[index][0]
            if tag in targets:
                while len(self._open) > index:
                    self._pop()
                return
            if tag in stops:
                return

    def _end(self, tag: str) -> None:
        if not self._counts.get(tag):
            # A stray end tag: nothing to close, but </p> and </br> still break the line.
            if (_is_heading(tag) or tag in self._BLOCKS) and not self._state.hidden:
                self._parts.append("\n")
            return
        while self._open[-1][0] != tag:
            self._pop()
        self._pop()

    def _pop(self) -> None:
        tag, state = self._open.pop()
        self._children.pop()
        self._counts[tag] -= 1
        self._cascade.close(state)
        if not state.hidden and (_is_heading(tag) or tag in self._BLOCKS):
            self._in_heading = False
            self._parts.append("\n")

    def _text(self) -> str:
        lines = [" ".join(line.split()) for line in "".join(self._parts).splitlines()]
        collapsed: list[str] = []
        for line in lines:
            if line or (collapsed and collapsed[-1]):
                collapsed.append(line)
        return "\n".join(collapsed).strip()


def _is_heading(tag: str) -> bool:
    return len(tag) == 2 and tag[0] == "h" and tag[1] in "123456"
