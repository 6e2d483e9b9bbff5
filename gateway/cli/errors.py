"""The CLI's one error handler: an error of a loragate package becomes click's
``Error: <message>`` and exit status 1, never a traceback; anything else is a bug and keeps
its traceback."""

from __future__ import annotations

from typing import Any

import click

from adapters.errors import AdapterError
from core.errors import CoreError
from gateway.errors import GatewayError
from monitor.errors import MonitorError
from retrieval.errors import RetrievalError
from trainer.errors import TrainerError

EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    CoreError,
    GatewayError,
    AdapterError,
    RetrievalError,
    MonitorError,
    TrainerError,
)


class CommandGroup(click.Group):
    """The ``loragate`` group: runs every command under the one error handler."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS as exc:
            raise click.ClickException(_message(exc)) from None


def _message(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else str(exc)
