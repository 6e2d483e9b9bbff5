"""Errors of the shared layer; ``gateway.http_errors`` maps them to HTTP once::

CoreError
├── ConfigError   bad settings, raised at start (never reaches HTTP)
└── StoreBusy     503 store_busy (with Retry-After): a write that kept meeting other
                  writers, or that the store refused
"""

from __future__ import annotations


class CoreError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CoreError):
    """A setting is invalid; the message names it."""


class StoreBusy(CoreError):
    """Nothing was written: the client must send it again (it was not acknowledged)."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
