"""Labels in the language a client asks for: the model folder's reviewed table (`translations.json`).

English, the catalogue's own language, is the default; `?lang=zh` or an `Accept-Language` that prefers
Chinese answers every label of every head, and the palette's colour names, in Simplified Chinese. A language
the model has no table for is answered in English, and a label the table lacks stays in English (`vitrine
export translations` lists such labels and fails).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
        self._by_key = {h.key: h.name for h in metadata.heads}

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
        """Every head's labels in `language`, in the model's order (for `/models`)."""
        return {h.name: [self.name(language, h.name, label) for label in h.labels] for h in self.metadata.heads}

    def entries(self, language: str, head: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answer entries ({"label", ...}) of one head with their labels translated."""
        return [self.entry(language, head, e) for e in entries]

    def entry(self, language: str, head: str, entry: dict[str, Any]) -> dict[str, Any]:
        """One answer entry with its `label` translated (and its nested top_k, if any)."""
        out = {**entry, "label": self.name(language, head, entry["label"])}
        if "top_k" in entry:
            out["top_k"] = self.entries(language, head, entry["top_k"])
        return out

    def attributes(self, language: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """An `/attributes` result's `attributes` translated: each head by its key, the palette's names as the
        colour head's labels."""
        if language == DEFAULT_LANGUAGE:
            return attributes
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if key == "palette":
                colour = next((h.name for h in self.metadata.heads if h.key == "colour"), "baseColour")
                out[key] = [{**swatch, "name": self.name(language, colour, swatch["name"])} for swatch in value]
            elif key in self._by_key:
                out[key] = self.entry(language, self._by_key[key], value)
            else:
                out[key] = value
        return out

    def category(self, language: str, category: dict[str, Any], finest: str) -> dict[str, Any]:
        """A `/classify` result's `category` translated: the finest level's label, then `master` and `sub`."""
        if language == DEFAULT_LANGUAGE:
            return category
        out = self.entry(language, finest, category)
        for level in ("master", "sub"):
            head = self.metadata.head_by_level(level)
            if level in category and head is not None:
                out[level] = self.entry(language, head.name, category[level])
        return out

    def classify_results(self, language: str, results: list[dict[str, Any]], finest_key: str) -> list[dict[str, Any]]:
        """`/classify` results with their labels in `language` (errors as they are)."""
        if language == DEFAULT_LANGUAGE:
            return results
        finest = self._by_key[finest_key]
        return [
            {
                **r,
                "category": self.category(language, r["category"], finest),
                "top_k": self.entries(language, finest, r["top_k"]),
            }
            if r.get("status") == "ok"
            else r
            for r in results
        ]

    def attributes_results(self, language: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`/attributes` results with their labels and palette names in `language` (errors as they are)."""
        if language == DEFAULT_LANGUAGE:
            return results
        return [
            {**r, "attributes": self.attributes(language, r["attributes"])} if r.get("status") == "ok" else r
            for r in results
        ]

    def label_of(self, language: str, key: str, label: str) -> str:
        """One label of the head keyed `key` (as answers name heads) in `language`."""
        return self.name(language, self._by_key.get(key, key), label)


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
