"""Reading ``<style>`` sheets into the rules that can hide text, ``@media`` judged and
nested rules flattened."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from retrieval.css.budget import Budget, TooComplex
from retrieval.css.declarations import Declarations, parse_declarations
from retrieval.css.hiding import leans_hidden
from retrieval.css.media import ALWAYS, NEVER, media_state
from retrieval.css.selector_parser import parse_selector
from retrieval.css.selectors import Selector
from retrieval.css.syntax import split_top, unescape

MAX_NESTING = 32
MAX_SELECTOR = 4096

_CSS_TOKEN = re.compile(
    r"""/\*.*?(?:\*/|\Z)"""  # a comment, also one left open
    r"""|"(?:[^"\\]|\\.)*(?:"|\Z)|'(?:[^'\\]|\\.)*(?:'|\Z)"""  # a string
    r"""|\\.|[{};]|[^{};"'/\\]+|[/\\]""",
    re.S,
)
_LOOSE_AT_RULES = frozenset({"supports", "layer", "container", "scope", "document",
                             "-moz-document"})  # fmt: skip


@dataclass(frozen=True)
class Rule:
    selector: Selector
    declarations: Declarations
    order: int


@dataclass
class _Block:
    prelude: str
    items: list[str | _Block] = field(default_factory=list)


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
        if item.prelude.startswith("@"):
            _collect_at_rule(item, loose, parents, rules, budget)
        else:
            _collect_style_rule(item, loose, parents, rules, budget)


def _collect_at_rule(
    block: _Block, loose: bool, parents: list[str] | None, rules: list[Rule], budget: Budget
) -> None:
    name, _, condition = block.prelude[1:].partition(" ")
    name = unescape(name).lower()
    if name == "media":
        state = media_state(condition)
        if state != NEVER:
            _collect(block, loose or state != ALWAYS, parents, rules, budget)
    elif name in _LOOSE_AT_RULES:
        _collect(block, True, parents, rules, budget)


def _collect_style_rule(
    block: _Block, loose: bool, parents: list[str] | None, rules: list[Rule], budget: Budget
) -> None:
    selectors = [part.strip() for part in split_top(block.prelude, ",")]
    if parents is not None:
        selectors = _nest(parents, selectors, budget)
    text = ";".join(part for part in block.items if isinstance(part, str))
    declarations = parse_declarations(text)
    if declarations:
        for selector_text in selectors:
            selector = parse_selector(selector_text)
            if selector is None:
                continue
            kept = _loose(declarations) if loose or not selector.exact else declarations
            if kept:
                rules.append(Rule(selector, kept, len(rules)))
    if any(isinstance(part, _Block) for part in block.items):
        # Nested rules: read as loose, so an approximate reading only hides more.
        _collect(block, True, selectors, rules, budget)


def _loose(declarations: Declarations) -> Declarations:
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
