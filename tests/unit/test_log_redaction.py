"""Secrets never reach the log, whichever code logs them and in which field."""

from __future__ import annotations

import json
import logging

import pytest

from core.logs import JsonFormatter, TextFormatter, redact

KEY = "lg-Yl19iyeVUjZnmW6gBTnUq-9tehnXf218inItfH3CJus"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"bad key {KEY} given", "bad key lg-*** given"),
        ("Authorization: Bearer sk-abc.def_123456", "Authorization: Bearer ***"),
        (
            "postgresql+asyncpg://loragate:s3cr3t@db:5432/x",
            "postgresql+asyncpg://loragate:***@db:5432/x",
        ),
        ("redis://:hunter2hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("key_0123abcd and lg- prefix alone", "key_0123abcd and lg- prefix alone"),  # ids stay
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_both_formats_redact_messages_extras_and_tracebacks(formatter: logging.Formatter) -> None:
    try:
        raise ValueError(f"header was Bearer {KEY}")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, f"key {KEY}", None, True)
        import sys

        record.exc_info = sys.exc_info()
    record.url = "postgresql://u:pw-secret@h/db"
    line = formatter.format(record)
    assert KEY not in line and "pw-secret" not in line
    assert "lg-***" in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["url"] == "postgresql://u:***@h/db"
