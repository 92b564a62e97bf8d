"""Labels in the language a client asks for: the model folder's reviewed table (`translations.json`).

English, the catalogue's own language, is the default; `?lang=zh` or an `Accept-Language` that prefers
Chinese answers every label of every head, and the palette's colour names, in Simplified Chinese. A language
the model has no table for is answered in English, and a label the table lacks stays in English (`vitrine
export translations` lists such labels and fails).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, Field

from app.schema import ModelMetadata

log = logging.getLogger(__name__)

TRANSLATIONS_FILE = "translations.json"
DEFAULT_LANGUAGE = "en"


class Translations(BaseModel):
    """What `translations.json` holds: per language, per head name, each English label's translation."""

    about: str = ""
    languages: dict[str, dict[str, dict[str, str]]] = Field(
        description="Language code (e.g. `zh`) to head name to English label to its translation."
    )

    @classmethod
    def read(cls, folder: Path) -> Translations | None:
        """The version folder's table, or None when it has none."""
        path = folder / TRANSLATIONS_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None

    def missing(self, metadata: ModelMetadata) -> dict[str, list[str]]:
        """Per language, the `head: label` pairs of the model that the table does not translate."""
        return {
            language: [
                f"{head.name}: {label}"
                for head in metadata.heads
                for label in head.labels
                if not heads.get(head.name, {}).get(label)
            ]
            for language, heads in self.languages.items()
        }


class Labels:
    """Translates the served model's labels; built once per model, looked up per answer."""

    def __init__(self, metadata: ModelMetadata, translations: Translations | None) -> None:
        self.metadata = metadata
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        if translations is not None:
            for language, missing in translations.missing(metadata).items():
                if missing:
                    log.warning(
                        "%d labels have no %s translation (answered in English): %s",
                        len(missing),
                        language,
                        ", ".join(missing[:10]),
                    )
            self.tables = translations.languages
        self.languages = [DEFAULT_LANGUAGE, *sorted(self.tables)]

    def choose(self, lang: str | None, accept_language: str | None) -> str:
        """The answer's language: `lang` when the model has labels in it, else the most preferred language of
        `Accept-Language` that it has, else English (answers say which in `Content-Language`)."""
        if lang is not None:
            code = lang.strip().lower().split("-")[0]
            return code if code in self.languages else DEFAULT_LANGUAGE
        for code in preferred(accept_language or ""):
            if code in self.languages:
                return code
        return DEFAULT_LANGUAGE

    def name(self, language: str, head: str, label: str) -> str:
        """One label of the head named `head` in `language` (English when the table lacks it)."""
        if language == DEFAULT_LANGUAGE:
            return label
        return self.tables.get(language, {}).get(head, {}).get(label) or label

    def head_labels(self, language: str) -> dict[str, list[str]]:
        """Every head's labels in `language`, in the model's order (for `/models` and the answers)."""
        return {h.name: [self.name(language, h.name, label) for label in h.labels] for h in self.metadata.heads}


def preferred(header: str) -> list[str]:
    """Primary language codes of an `Accept-Language` header, most preferred first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        code = tag.strip().lower().split("-")[0]
        if code and code != "*" and quality > 0:
            ranked.append((-quality, position, code))
    return [code for _, _, code in sorted(ranked)]
