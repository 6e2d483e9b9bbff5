"""Structured logging: one JSON object per line, with the ``extra`` fields of each call.

Every line passes through ``redact`` on its way out: API keys, bearer tokens and passwords
in URLs are masked whatever code logged them (an exception message quoting a header, say).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


_SECRETS = re.compile(
    r"(?P<key>lg-[A-Za-z0-9_-]{8,})"
    r"|(?P<bearer>(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
    r"|(?P<password>(?<=://)[^:/@\s]*:[^@\s]+(?=@))"
)


def redact(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        if match.group("key"):
            return "lg-***"
        if match.group("bearer"):
            return "Bearer ***"
        return match.group("password").split(":", 1)[0] + ":***"

    return _SECRETS.sub(mask, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(
            {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRS}
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}" for key, value in vars(record).items() if key not in _STANDARD_ATTRS
        )
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line}  {extras}" if extras else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def configure_logging(level: str = "INFO", fmt: str = "json", *, quiet: bool = False) -> None:
    """One stderr handler in ``fmt``. ``quiet`` (a one-shot CLI command without
    ``--verbose``): warnings and errors only, but the progress of long work still shows."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.getLevelName(level), logging.WARNING) if quiet else level)
    logging.getLogger("loragate.progress").setLevel(level)
    # Libraries' chatter (alembic lists its plugins on every start) is not ours to show.
    for noisy in ("httpx", "httpcore", "alembic", "faiss", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
