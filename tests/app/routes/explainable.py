"""A tiny model repository whose version has explanation maps, learned shades and a Chinese label table."""

from __future__ import annotations

import json
from pathlib import Path

from app.palette import PALETTE_FILE, Shade, Shades
from app.translate import TRANSLATIONS_FILE
from export.explainable import make_explainable
from tests.tiny_model import HEADS, make_pooled_version

ZH = {
    "articleType": {
        "Tshirts": "T恤",
        "Shirts": "衬衫",
        "Casual Shoes": "休闲鞋",
        "Watches": "手表",
        "Handbags": "手提包",
    },
    "subCategory": {"Topwear": "上装", "Shoes": "鞋", "Watches": "手表", "Bags": "包袋"},
    "masterCategory": {"Apparel": "服装", "Accessories": "配饰", "Footwear": "鞋履"},
    "baseColour": {
        "Black": "黑色",
        "White": "白色",
        "Blue": "蓝色",
        "Navy Blue": "藏青色",
        "Red": "红色",
        "Green": "绿色",
    },
    "gender": {"Men": "男士", "Women": "女士", "Unisex": "男女通用"},
    "season": {"Summer": "夏季", "Fall": "秋季", "Winter": "冬季"},
    "usage": {"Casual": "休闲", "Sports": "运动", "Formal": "正装"},
}


def make_explainable_repository(root: Path, *, size: int = 32) -> Path:
    """The repository folder; its model `tiny` version 1 explains, names a palette and answers in Chinese."""
    folder = make_pooled_version(root / "tiny" / "1", size=size, members=2)
    make_explainable(folder)
    shades = Shades(
        head="baseColour",
        names={
            "Black": [Shade(lab=(10, 0, 0), weight=1)],
            "White": [Shade(lab=(95, 0, 0), weight=1)],
            "Blue": [Shade(lab=(45, 10, -50), weight=1)],
            "Navy Blue": [Shade(lab=(20, 5, -25), weight=1)],
            "Red": [Shade(lab=(45, 60, 40), weight=1)],
            "Green": [Shade(lab=(50, -45, 30), weight=1)],
        },
        spread=12.0,
        head_weight=0.5,
    )
    (folder / PALETTE_FILE).write_text(shades.model_dump_json(), encoding="utf-8")
    assert {h.name for h in HEADS} == set(ZH)
    (folder / TRANSLATIONS_FILE).write_text(json.dumps({"languages": {"zh": ZH}}, ensure_ascii=False), encoding="utf-8")
    return root
