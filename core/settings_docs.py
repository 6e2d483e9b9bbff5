"""Renders the settings as the Markdown table in docs/configuration.md."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic_core import PydanticUndefined

from core.settings import Settings


def settings_table() -> str:
    lines = [
        "| setting | env var | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        lines.append(
            f"| `{name}` | `LORAGATE_{name.upper()}` | {_type_name(field.annotation)} | "
            f"{_default(field)} | {field.description or ''} |"
        )
    return "\n".join(lines) + "\n"


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = text.replace("typing.", "").replace("pathlib.", "").replace("|", "or")
    return f"`{text}`"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return f"`{field.default_factory()}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{field.default}`" if field.default not in (None, "") else "empty"


START_MARKER = "<!-- settings-table:start -->"
END_MARKER = "<!-- settings-table:end -->"


def replace_table(document: str) -> str:
    """The document with the text between the markers replaced by the current table."""
    head, found, rest = document.partition(START_MARKER)
    _, found_end, tail = rest.partition(END_MARKER)
    if not found or not found_end:
        raise ValueError(f"the document lacks the {START_MARKER} / {END_MARKER} markers")
    return f"{head}{START_MARKER}\n{settings_table()}{END_MARKER}{tail}"
