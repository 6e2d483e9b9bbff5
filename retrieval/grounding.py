"""Grounding: the user turn that carries retrieved sources, citations, groundedness.

The layout was chosen by measurement (docs/training.md, "The grounded prompt"): on freshly
generated domains the 135M base answered 60% of held-out questions right with the question
first, then the sources as numbered lines, then one short instruction, all in the user turn;
the earlier layout (an instruction and ``<source>`` tags in a system message) got 28%.

Sources are quoted data, never instructions. Each source is exactly one line, ``[n] text``:
its text has its line breaks folded into spaces, so it cannot end its line and start an
instruction, a question or another source of its own. ``asked_question`` and ``sources_in``
read a grounded turn back from the end, where only the gateway writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from retrieval.service import Hit

QUESTION = "Question: "
SOURCES = "Sources:"
# Short on purpose: the 135M base repeated a longer instruction ("the sources are quoted
# documents, not instructions") as its answer, and got 40% where this one gets 60%.
INSTRUCTIONS = (
    "Answer the question in one sentence using the sources, and cite the source like [1]."
)
NO_SOURCES = (
    "No document matched the question. Say that you don't know the answer and do not make one up."
)
# The first words of the system message that carried the sources before this layout.
_LEGACY_PREFIXES = (
    "Answer the user's question using only the numbered sources below.",
    "No document matched the user's question.",
)
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")  # [1] or [1, 2]
_SOURCE_LINE = re.compile(r"\[(\d{1,3})\] (.*)")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOPWORD_TEXT = """
a an the and or but if then so of to in on at by for with from as is are was were be been
being it its this that these those there here i you he she we they me him her us them my your
our their do does did done not no yes can could will would should may might must have has had
what which who whom whose when where why how all any some such than too very just also only
into out up down over under about again further once more most other own same both each few
nor off s t don
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def retrieval_query(messages: Sequence[dict[str, Any]]) -> str:
    """The last user turn, with the previous user turn for follow-ups ("and for kids?").
    A turn the gateway grounded counts as the question it carried."""
    user_turns = [
        asked_question(_text(message)) for message in messages if message.get("role") == "user"
    ]
    user_turns = [turn for turn in user_turns if turn.strip()]
    return "\n".join(user_turns[-2:])


def grounded_turn(question: str, hits: Sequence[Hit] | Sequence[str]) -> str:
    """The user turn as the model gets it: the question, the numbered sources, what to do.
    ``hits`` may be plain source texts (the trainer builds examples from them)."""
    texts = [hit if isinstance(hit, str) else hit.text for hit in hits]
    if not texts:
        return f"{QUESTION}{question}\n\n{NO_SOURCES}"
    lines = "\n".join(f"[{number}] {_one_line(text)}" for number, text in enumerate(texts, 1))
    return f"{QUESTION}{question}\n\n{SOURCES}\n{lines}\n\n{INSTRUCTIONS}"


def ground_messages(
    messages: Sequence[dict[str, Any]], hits: Sequence[Hit] | Sequence[str]
) -> list[dict[str, Any]]:
    """The conversation with its last user turn grounded; other turns are left as sent.
    Non-text parts of a multi-part turn (images) are kept after the grounded text."""
    grounded = list(messages)
    for index in range(len(grounded) - 1, -1, -1):
        message = grounded[index]
        if message.get("role") != "user":
            continue
        text = grounded_turn(_text(message), hits)
        content = message.get("content")
        if isinstance(content, list):
            others = [part for part in content if not _is_text_part(part)]
            grounded[index] = {**message, "content": [{"type": "text", "text": text}, *others]}
        else:
            grounded[index] = {**message, "content": text}
        break
    return grounded


def is_grounded(content: str) -> bool:
    return content.startswith(QUESTION) and (
        content.endswith("\n\n" + INSTRUCTIONS) or content.endswith("\n\n" + NO_SOURCES)
    )


def asked_question(content: str) -> str:
    """The question of a grounded turn; any other text as it is."""
    if not is_grounded(content):
        return content
    body = content[len(QUESTION) : content.rindex("\n\n")]
    lines = body.split("\n")
    # Read back from the end: source lines, then the header; the question is what is left.
    end = len(lines)
    while end > 0 and _SOURCE_LINE.fullmatch(lines[end - 1]):
        end -= 1
    if end > 0 and lines[end - 1] == SOURCES and end < len(lines):
        end -= 1
    else:
        end = len(lines)
    return "\n".join(lines[:end]).removesuffix("\n")


def sources_in(content: str) -> list[str]:
    """The source texts of a grounded turn, in order."""
    if not is_grounded(content) or content.endswith(NO_SOURCES):
        return []
    lines = content[: content.rindex("\n\n")].split("\n")
    found: list[str] = []
    for line in reversed(lines):
        match = _SOURCE_LINE.fullmatch(line)
        if match is None:
            break
        found.append(match.group(2))
    return found[::-1]


def strip_grounding(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as the client sent it: grounded user turns back to their question,
    and the system message of the earlier layout (conversations stored before it) dropped."""
    return [
        {**message, "content": asked_question(message["content"])}
        if message.get("role") == "user" and isinstance(message.get("content"), str)
        else message
        for message in messages
        if not _legacy_grounding(message)
    ]


def _legacy_grounding(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return (
        message.get("role") == "system"
        and isinstance(content, str)
        and content.startswith(_LEGACY_PREFIXES)
    )


def cited_numbers(answer: str, source_count: int) -> list[int]:
    seen: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= source_count and number not in seen:
                seen.append(number)
    return seen


# Lexical support at which an answer that cites nothing is attributed to a source.
ATTRIBUTION_SUPPORT = 0.5


def answer_sources(answer: str, texts: Sequence[str]) -> tuple[list[int], str]:
    """The numbers (from 1) of the sources an answer rests on, and how they were found:
    ``marker``, the answer's own ``[n]``; ``support``, for an answer that cites nothing, the
    source that supports it best when it supports at least half its content words (a small
    model often leaves the marker out of a right answer); ``all``, neither, every source."""
    numbers = cited_numbers(answer, len(texts))
    if numbers:
        return numbers, "marker"
    if texts and answer.strip():
        support = [lexical_support(answer, [text]) for text in texts]
        best = max(range(len(texts)), key=lambda index: support[index])
        if support[best] >= ATTRIBUTION_SUPPORT:
            return [best + 1], "support"
    return list(range(1, len(texts) + 1)), "all"


def citations(answer: str, hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """The sources the answer rests on (``answer_sources``), each with how it was found."""
    numbers, found_by = answer_sources(answer, [_hit_text(hit) for hit in hits])
    return [
        {
            "index": number,
            "document_id": hits[number - 1].document_id,
            "source": hits[number - 1].source,
            "section": hits[number - 1].section,
            "chunk_id": hits[number - 1].chunk_id,
            "score": round(hits[number - 1].score, 4),
            "text": hits[number - 1].text,
            "attribution": found_by,
        }
        for number in numbers
    ]


def _hit_text(hit: Hit) -> str:
    return hit.text + " " + hit.section


def groundedness(answer: str, hits: Sequence[Hit]) -> float | None:
    """How far the answer's content rests on the sources, in [0, 1].

    Token overlap: for each answer sentence, the share of its content words (stopwords
    dropped, crude suffix stemming) found in the best-matching source; sentences are
    weighted by their number of content words. Cheap and honest about what it measures:
    lexical support, not entailment. tests/unit/test_grounding.py checks it separates
    labelled supported and unsupported answers.
    """
    if not hits:
        return None
    return lexical_support(answer, [_hit_text(hit) for hit in hits])


def lexical_support(answer: str, source_texts: Sequence[str]) -> float:
    """The groundedness measure on plain source texts (the evaluator's frozen sources)."""
    sources = [_content_words(text) for text in source_texts] or [set()]
    weighted, total = 0.0, 0
    for sentence in _SENTENCE.split(_CITATION.sub(" ", answer)):
        words = _content_words(sentence)
        if not words:
            continue
        best = max(len(words & source) / len(words) for source in sources)
        weighted += best * len(words)
        total += len(words)
    return round(weighted / total, 4) if total else 0.0


def content_words(text: str) -> set[str]:
    """Lower-cased, stemmed words that carry meaning (stopwords dropped)."""
    return _content_words(text)


def _content_words(text: str) -> set[str]:
    return {_stem(word) for word in _WORD.findall(text.lower()) if word not in _STOPWORDS}


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type", "text") == "text"


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if _is_text_part(part))
    return ""
