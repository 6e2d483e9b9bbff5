"""Monitoring errors: the package's one base exception."""

from __future__ import annotations


class MonitorError(Exception):
    """The monitor could not produce a report (mapped to HTTP 500 / CLI exit 1)."""


class UnknownAlias(MonitorError):
    """No alias of that name (HTTP 404)."""
