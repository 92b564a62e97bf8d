"""`vitrine export translations`: check that a version folder's label table covers every label of every head."""

from __future__ import annotations

from pathlib import Path

from app.schema import ModelMetadata
from app.translate import TRANSLATIONS_FILE, Translations


def check_translations(folder: Path) -> dict[str, int]:
    """Per language, how many labels the table translates; ValueError naming the labels it lacks."""
    meta = ModelMetadata.read(folder)
    table = Translations.read(folder)
    if table is None:
        raise FileNotFoundError(f"{folder} has no {TRANSLATIONS_FILE}")
    lacking = {language: labels for language, labels in table.missing(meta).items() if labels}
    if lacking:
        lines = [f"{language}: {', '.join(labels)}" for language, labels in lacking.items()]
        raise ValueError(f"{folder / TRANSLATIONS_FILE} lacks translations of " + "; ".join(lines))
    total = sum(len(h.labels) for h in meta.heads)
    return dict.fromkeys(table.languages, total)
