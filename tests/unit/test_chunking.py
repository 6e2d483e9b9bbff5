"""Markdown sections and token windows with overlap."""

from __future__ import annotations

import itertools
import re

import pytest

from retrieval.chunking import Chunk, ChunkingConfig, chunk_document, split_sections
from retrieval.embeddings import Embedder

_TOKEN = re.compile(r"\S+")


def whitespace_spans(text: str) -> list[tuple[int, int]]:
    """Stand-in tokenizer: one token per whitespace-separated word."""
    return [match.span() for match in _TOKEN.finditer(text)]


def subword_spans(text: str) -> list[tuple[int, int]]:
    """Stand-in subword tokenizer: each word is cut into pieces of at most four characters."""
    spans = []
    for match in _TOKEN.finditer(text):
        for start in range(match.start(), match.end(), 4):
            spans.append((start, min(start + 4, match.end())))
    return spans


def _words(count: int) -> list[str]:
    # Words of different lengths, some with punctuation, all distinct.
    shapes = ["w{}", "word{}", "x{},", "longerword{}.", "({})", "a-b-{}"]
    return [shapes[i % len(shapes)].format(i) for i in range(count)]


def _chunk_words(body: str, config: ChunkingConfig) -> list[list[str]]:
    chunks = chunk_document(body, whitespace_spans, config)
    return [chunk.text.split() for chunk in chunks]


WINDOW_CASES = [
    (16, 0, 100),
    (16, 7, 100),
    (20, 5, 21),
    (20, 5, 100),
    (20, 5, 101),
    (32, 15, 257),
    (200, 40, 1000),
]


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens", "count"), WINDOW_CASES)
def test_no_chunk_exceeds_chunk_tokens(chunk_tokens: int, overlap_tokens: int, count: int) -> None:
    config = ChunkingConfig(chunk_tokens, overlap_tokens)
    chunks = _chunk_words(" ".join(_words(count)), config)
    assert len(chunks) > 1
    assert all(len(words) <= chunk_tokens for words in chunks)
    # Every window but the last is full.
    assert all(len(words) == chunk_tokens for words in chunks[:-1])


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens", "count"), WINDOW_CASES)
def test_consecutive_chunks_overlap_by_overlap_tokens(
    chunk_tokens: int, overlap_tokens: int, count: int
) -> None:
    config = ChunkingConfig(chunk_tokens, overlap_tokens)
    words = _words(count)
    chunks = _chunk_words(" ".join(words), config)
    step = chunk_tokens - overlap_tokens
    for index, (before, after) in enumerate(itertools.pairwise(chunks)):
        tail = before[len(before) - overlap_tokens :] if overlap_tokens else []
        assert after[:overlap_tokens] == tail
        assert after[0] == words[(index + 1) * step]


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens", "count"), WINDOW_CASES)
def test_every_word_lands_in_a_chunk_whole(
    chunk_tokens: int, overlap_tokens: int, count: int
) -> None:
    words = _words(count)
    chunks = _chunk_words(" ".join(words), ChunkingConfig(chunk_tokens, overlap_tokens))
    seen = [word for chunk in chunks for word in chunk]
    assert set(seen) == set(words)  # nothing lost, nothing split or invented
    # Dropping each chunk's overlap gives back the body, in order.
    rebuilt = chunks[0] + [word for chunk in chunks[1:] for word in chunk[overlap_tokens:]]
    assert rebuilt == words


def test_words_are_never_split_across_irregular_whitespace() -> None:
    words = _words(90)
    separators = [" ", "  ", "\n", "\t", " \n "]
    body = "".join(word + separators[i % len(separators)] for i, word in enumerate(words))
    chunks = chunk_document(body.strip(), whitespace_spans, ChunkingConfig(16, 4))
    for chunk in chunks:
        assert chunk.text == chunk.text.strip()
        assert set(chunk.text.split()) <= set(words)
    assert {word for chunk in chunks for word in chunk.text.split()} == set(words)


def test_subword_windows_keep_to_chunk_tokens() -> None:
    # Words are 2 to 13 characters, so no word is longer than a window; snapping a window to
    # word boundaries must not push it past chunk_tokens tokens of the tokenizer.
    body = " ".join(_words(120))
    config = ChunkingConfig(16, 4)
    chunks = chunk_document(body, subword_spans, config)
    assert len(chunks) > 1
    for chunk in chunks:
        assert set(chunk.text.split()) <= set(body.split())  # words stay whole
    sizes = [len(subword_spans(chunk.text)) for chunk in chunks]
    assert max(sizes) <= config.chunk_tokens, sizes


def test_short_body_is_one_chunk() -> None:
    chunks = chunk_document("  Refunds take five days.  ", whitespace_spans, ChunkingConfig())
    assert chunks == [Chunk(ordinal=0, section="", text="Refunds take five days.")]


def test_body_of_exactly_chunk_tokens_is_one_chunk() -> None:
    body = " ".join(_words(16))
    assert [
        chunk.text for chunk in chunk_document(body, whitespace_spans, ChunkingConfig(16, 4))
    ] == [body]


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document("", whitespace_spans, ChunkingConfig()) == []
    assert chunk_document("# Only a title\n\n", whitespace_spans, ChunkingConfig()) == []


def test_heading_paths_nest_and_go_back_up() -> None:
    markdown = "# A\nalpha\n## B\nbravo\n# C\ncharlie\n"
    assert split_sections(markdown) == [("A", "alpha"), ("A > B", "bravo"), ("C", "charlie")]


def test_heading_paths_over_several_levels() -> None:
    markdown = "\n".join(
        [
            "# Guide",
            "intro",
            "## Refunds",
            "refunds",
            "### Late returns",
            "late",
            "## Shipping",
            "shipping",
            "#### Customs",
            "customs",
            "### Europe",
            "europe",
            "# Appendix",
            "appendix",
        ]
    )
    assert split_sections(markdown) == [
        ("Guide", "intro"),
        ("Guide > Refunds", "refunds"),
        ("Guide > Refunds > Late returns", "late"),
        ("Guide > Shipping", "shipping"),
        ("Guide > Shipping > Customs", "customs"),
        ("Guide > Shipping > Europe", "europe"),
        ("Appendix", "appendix"),
    ]


def test_heading_titles_are_trimmed_of_closing_hashes() -> None:
    assert split_sections("##   Refunds   ##\nbody") == [("Refunds", "body")]


def test_hash_without_space_is_not_a_heading() -> None:
    assert split_sections("#hashtag\n####### seven") == [("", "#hashtag\n####### seven")]


def test_text_before_first_heading_has_empty_section() -> None:
    assert split_sections("preamble line\n\n# A\nalpha") == [("", "preamble line"), ("A", "alpha")]


def test_headings_without_body_are_dropped_but_stay_in_the_path() -> None:
    assert split_sections("# A\n\n## B\nbravo") == [("A > B", "bravo")]


def test_hash_lines_inside_code_fences_are_not_headings() -> None:
    markdown = "\n".join(
        [
            "# Setup",
            "Run this:",
            "```bash",
            "# install the package",
            "pip install loragate",
            "## not a heading either",
            "```",
            "Then this:",
            "~~~",
            "# still code",
            "~~~",
            "## Next",
            "next steps",
        ]
    )
    sections = split_sections(markdown)
    assert [title for title, _ in sections] == ["Setup", "Setup > Next"]
    body = sections[0][1]
    assert "# install the package" in body
    assert "## not a heading either" in body
    assert "# still code" in body
    assert body.endswith("~~~")


def test_chunks_carry_section_and_ordinal() -> None:
    long_body = " ".join(_words(40))
    markdown = f"intro words\n# Refunds\n{long_body}\n## Late returns\nshort body"
    chunks = chunk_document(markdown, whitespace_spans, ChunkingConfig(16, 4))
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    assert chunks[0].section == ""
    assert chunks[-1] == Chunk(len(chunks) - 1, "Refunds > Late returns", "short body")
    assert {chunk.section for chunk in chunks[1:-1]} == {"Refunds"}
    assert len(chunks) == 1 + 3 + 1  # 40 words in windows of 16 stepping by 12


def test_embedding_text_prefixes_the_section() -> None:
    assert Chunk(0, "Refunds > Late", "body").embedding_text() == "Refunds > Late\nbody"
    assert Chunk(0, "", "body").embedding_text() == "body"


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(15, 0), (0, 0), (-1, 0)])
def test_config_rejects_small_chunks(chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        ChunkingConfig(chunk_tokens, overlap_tokens)


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap_tokens"), [(16, -1), (16, 8), (16, 16), (100, 60)]
)
def test_config_rejects_bad_overlap(chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        ChunkingConfig(chunk_tokens, overlap_tokens)


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap_tokens"), [(16, 0), (16, 7), (200, 40), (512, 255)]
)
def test_config_accepts_good_values(chunk_tokens: int, overlap_tokens: int) -> None:
    config = ChunkingConfig(chunk_tokens, overlap_tokens)
    assert (config.chunk_tokens, config.overlap_tokens) == (chunk_tokens, overlap_tokens)


# The real tokenizer: all-MiniLM-L6-v2's WordPiece, loaded offline (about 10 s).

PROSE = """\
# Returns and refunds

Customers can return unopened items within 30 days of delivery for a full refund. Items
that were opened, damaged, or used aren't eligible, except when they arrived faulty; in
that case we'll replace them free of charge (including shipping). Refunds are issued to the
original payment method within 5 business days, e.g. Visa, Mastercard or PayPal.

## Late returns

Returns received after the 30-day window are refused, unless the order was a gift: gift
recipients get store credit instead. See https://example.com/help/returns?lang=en-GB for the
up-to-date list of exceptions, and contact support@example.com with your order number.

# Shipping

Standard shipping takes 3-7 business days; express shipping costs $15.00 and arrives in two.
We don't ship to P.O. boxes. International orders may be subject to customs duties, which
are the customer's responsibility. Tracking numbers are e-mailed once the parcel has left.
"""


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    embedder = Embedder()
    embedder.token_spans("warm up")  # loads the model once for the module
    return embedder


def test_real_tokenizer_chunks_fit_chunk_tokens(embedder: Embedder) -> None:
    config = ChunkingConfig(chunk_tokens=24, overlap_tokens=6)
    chunks = chunk_document(PROSE, embedder.token_spans, config)
    assert len(chunks) > 6
    sizes = [len(embedder.token_spans(chunk.text)) for chunk in chunks]
    assert max(sizes) <= config.chunk_tokens, sizes


def test_heading_padded_with_spaces_chunks_in_linear_time() -> None:
    """A `#` line padded with spaces made the old heading regex backtrack quadratically
    (16k spaces: 5 s; 1 MB: hours). 1 MB of such lines must chunk well within 5 s, checked
    from a thread so a regression fails the test instead of hanging it."""
    import threading

    line = "# a" + " " * 250_000 + "x!"
    document = "\n".join(
        [line, "one", "# " + " " * 250_000, "## b " + "#" * 250_000, "two", line, "three"]
    )
    assert len(document) >= 1_000_000
    done: list[list[Chunk]] = []
    worker = threading.Thread(
        target=lambda: done.append(chunk_document(document, whitespace_spans, ChunkingConfig())),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=5)
    assert done, "chunking a 1 MB pathological document took over 5 s"
    sections = [(chunk.section.split(), chunk.text.split()[-1]) for chunk in done[0]]
    assert sections == [(["a", "x!"], "#"), (["a", "x!", ">", "b"], "two"), (["a", "x!"], "three")]


@pytest.mark.parametrize(
    ("line", "heading"),
    [
        ("# Title", ("Title",)),
        ("### Deep ###", ("Deep",)),
        ("## C# notes", ("C# notes",)),
        ("#Title", None),
        ("####### seven", None),
        ("#    ", None),
    ],
)
def test_heading_lines(line: str, heading: tuple[str] | None) -> None:
    sections = split_sections(f"{line}\nbody")
    assert [title for title, _ in sections] == (list(heading) if heading else [""])
