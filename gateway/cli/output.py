"""How a command prints its result: text for people by default, JSON with ``--json``.

Every command that prints a result takes ``--json`` through the one ``json_output``
decorator and prints through ``emit``, which is given both the data and how to show it as
text, so the two never drift apart and no command parses its own flag. In JSON mode stdout
carries exactly one JSON document (scripts pipe it to ``jq``); progress, warnings and
errors stay on stderr, and a failure is still exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_JSON = "loragate.json"  # the context's meta key; meta is shared by the whole invocation


def json_output(command: F) -> F:
    """Give ``command`` the ``--json`` flag that ``emit`` obeys."""
    option = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="Print the result as one JSON document on stdout, for scripts.",
    )
    return option(command)


def _remember(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_JSON] = True


def wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.meta.get(_JSON))


def emit(data: Any, text: str | Callable[[], None]) -> None:
    """Print ``data`` as JSON under ``--json``, else ``text`` (a line, or a printer)."""
    if wants_json():
        click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    elif callable(text):
        text()
    else:
        click.echo(text)


def as_json_text(data: Any) -> str:
    """The indented JSON that commands whose text is already JSON print either way."""
    return json.dumps(data, indent=2, default=str)
