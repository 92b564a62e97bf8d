"""Labels in Chinese: the committed table covers every label, languages are chosen from the query or header."""

from __future__ import annotations

import pytest

from app.schema import ModelMetadata
from app.translate import Labels, Translations, preferred
from export.translations import check_translations
from tests.conftest import ROOT

MODELS = ROOT / "models" / "product-classifier"
VERSIONS = sorted(p for p in MODELS.iterdir() if (p / "translations.json").is_file())


def labels(folder=VERSIONS[-1]) -> Labels:  # type: ignore[no-untyped-def]
    return Labels(ModelMetadata.read(folder), Translations.read(folder))


@pytest.mark.parametrize("folder", VERSIONS, ids=[p.name for p in VERSIONS])
def test_the_table_covers_every_label_of_every_head(folder) -> None:  # type: ignore[no-untyped-def]
    meta = ModelMetadata.read(folder)
    table = Translations.read(folder)
    assert table is not None and table.missing(meta) == {"zh": []}
    assert check_translations(folder) == {"zh": sum(len(h.labels) for h in meta.heads)}


def test_the_default_model_has_a_table() -> None:
    assert VERSIONS and VERSIONS[-1].name == max((p.name for p in MODELS.iterdir()), key=int)


def test_a_missing_label_is_named_by_the_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    meta = ModelMetadata.read(VERSIONS[-1])
    table = Translations.read(VERSIONS[-1])
    assert table is not None
    del table.languages["zh"]["articleType"]["Tshirts"]
    meta.write(tmp_path)
    (tmp_path / "translations.json").write_text(table.model_dump_json(), encoding="utf-8")
    with pytest.raises(ValueError, match="articleType: Tshirts"):
        check_translations(tmp_path)
    assert Labels(meta, table).name("zh", "articleType", "Tshirts") == "Tshirts"  # English, not an error


def test_well_known_labels_read_as_a_chinese_shop_writes_them() -> None:
    zh = labels()
    assert zh.name("zh", "articleType", "Tshirts") == "T恤"
    assert zh.name("zh", "articleType", "Sports Shoes") == "运动鞋"
    assert zh.name("zh", "baseColour", "Navy Blue") == "藏青色"
    assert zh.name("en", "baseColour", "Navy Blue") == "Navy Blue"
    assert zh.head_labels("zh")["gender"] == ["男童", "女童", "男士", "男女通用", "女士"]


@pytest.mark.parametrize(
    ("lang", "header", "chosen"),
    [
        (None, None, "en"),
        ("zh", None, "zh"),
        ("zh-CN", "en", "zh"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, "en-GB,en;q=0.9,zh;q=0.5", "en"),
        (None, "fr;q=1, zh-Hans;q=0.7", "zh"),
        (None, "zh;q=0", "en"),
        (None, "de", "en"),
        ("en", "zh", "en"),
    ],
)
def test_the_language_comes_from_the_query_then_the_header(lang: str | None, header: str | None, chosen: str) -> None:
    assert labels().choose(lang, header) == chosen


def test_a_language_without_a_table_is_answered_in_english() -> None:
    assert labels().choose("fr", "zh") == "en"  # asked for explicitly: not overridden by the header
    assert labels().languages == ["en", "zh"]


def test_accept_language_is_ranked_by_quality_then_order() -> None:
    assert preferred("en;q=0.5, zh, fr;q=0.5") == ["zh", "en", "fr"]
    assert preferred("*;q=0.1, zh-TW;q=bad") == []
