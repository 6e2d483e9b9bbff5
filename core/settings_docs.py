"""Renders the settings as the Markdown tables in docs/configuration.md: the top-level
settings first, then one table per section (core/sections.py), each row with the setting's
place in the object (``train.rank``) and its flat environment variable."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic_core import PydanticUndefined

from core.settings import SECTIONS, Settings, flat_name, section_fields

HEADER = ["| setting | env var | type | default | meaning |", "| --- | --- | --- | --- | --- |"]


def settings_table() -> str:
    lines = ["### Top level", "", *HEADER]
    for name, field in Settings.model_fields.items():
        if name not in SECTIONS:
            lines.append(_row(name, name, field))
    for name, section in SECTIONS.items():
        description = Settings.model_fields[name].description or ""
        lines += ["", f"### `{name}`: {description}", "", *HEADER]
        for field_name, field in section_fields(section).items():
            lines.append(_row(f"{name}.{field_name}", flat_name(section, field_name), field))
    return "\n".join(lines) + "\n"


def _row(place: str, flat: str, field: Any) -> str:
    return (
        f"| `{place}` | `LORAGATE_{flat.upper()}` | {_type_name(field.annotation)} | "
        f"{_default(field)} | {field.description or ''} |"
    )


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = "list" if text == "tuple" else text  # a section's sequences: a list to the operator
    text = text.replace("typing.", "").replace("pathlib.", "").replace("|", "or")
    return f"`{text}`"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return f"`{field.default_factory()}`"
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, tuple):
        return f"`{list(field.default)}`"
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
