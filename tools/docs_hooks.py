"""MkDocs hook: the settings page's table is generated from `app.settings.Settings` at every build."""

from __future__ import annotations

import logging
import typing
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from app.settings import DEFAULT_REPOSITORY, Settings

MARKER = "<!-- settings-table -->"
ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("mkdocs.hooks.settings")

# Bounds as pydantic keeps them (annotated_types metadata), shown as a short constraint.
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >="}


def _type(field: FieldInfo) -> str:
    """The field's type as a reader needs it: the allowed values of a Literal, else the plain type name."""
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return " / ".join(f"`{a}`" for a in args)
    inner = args[0] if args else annotation
    if typing.get_origin(inner) is typing.Literal:
        return " / ".join(f"`{a}`" for a in typing.get_args(inner))
    name = getattr(inner, "__name__", str(inner))
    return {"SecretStr": "secret string", "Path": "path"}.get(name, name)


def _default(field: FieldInfo) -> str:
    """The default as an operator sets it, or where a computed default is described."""
    if field.default_factory is not None:
        return "usable CPUs" if field.default_factory.__name__ == "available_cpus" else "computed at start"
    value = field.default
    if value is None:
        return "derived (see meaning)"
    if value == DEFAULT_REPOSITORY:
        return "`models/` of the checkout"
    if hasattr(value, "get_secret_value"):
        return "(empty)" if not value.get_secret_value() else "(set)"
    return f"`{value}`"


def _bounds(field: FieldInfo) -> str:
    """The field's numeric or length bounds, e.g. `>= 1, <= 256`."""
    found = []
    for item in field.metadata:
        for attr, sign in BOUNDS.items():
            bound = getattr(item, attr, None)
            if bound is not None:
                found.append(f"{sign} {bound}")
    return ", ".join(found)


def _markdown(text: str) -> str:
    """A description as one table cell: angle brackets outside code spans escaped (else read as HTML)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def settings_table() -> str:
    """Markdown table of every setting: variable, type, default, bounds, meaning."""
    rows = ["| Variable | Type | Default | Bounds | Meaning |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = _markdown(field.description or "")
        rows.append(f"| `VITRINE_{name.upper()}` | {_type(field)} | {_default(field)} | {_bounds(field)} | {meaning} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Put the generated settings table where the settings page has its marker."""
    if MARKER not in markdown:
        return markdown
    log.debug("settings table generated for %s", page.file.src_uri)
    return markdown.replace(MARKER, settings_table())
