"""Why a head gave a label: its class activation map over the model's input, as a grid and as a heatmap PNG.

The maps come from the graph's `explain/<head>` outputs (`vitrine export explainable`), which onnxruntime
computes only when a run asks for them; a map's cells average to the label's logit (less its bias), so no
gradients are needed. An ensemble's maps are its members' mean.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from app.errors import NotAvailable, UnknownHead, UnknownLabel
from app.runtime import softmax
from app.schema import Head, ModelMetadata

# Run the graph: output names and a uint8 NHWC batch in, those outputs out (an onnxruntime session's `run`).
RunOutputs = Callable[[list[str], np.ndarray], list[np.ndarray]]

DEFAULT_HEAD_KEY = "article"
HEAT_OPACITY = 0.55  # the hottest pixel's share of the colour map in the picture; the photo shows through
# A perceptual colour map (dark blue, through green, to yellow), as anchors interpolated into 256 entries.
_ANCHORS = np.array(
    [[48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 241, 152], [164, 252, 60], [241, 202, 58], [250, 115, 38]],
    dtype=np.float32,
)
COLOUR_MAP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], axis=1
).astype(np.float32)


@dataclass(frozen=True)
class Explanation:
    """One image's explanation: the label, its score, the heat per cell (0 to 1) and the picture (PNG)."""

    head: Head
    label: str
    score: float
    grid: np.ndarray  # rows x columns over the model's square input, 0 (least evidence) to 1 (the most)
    png: bytes

    def answer(self, name: Callable[[str, str], str] | None = None) -> dict[str, Any]:
        """The `explanation` entry of an answer; `name(head, label)` translates the label when given."""
        label = name(self.head.name, self.label) if name else self.label
        return {
            "head": self.head.key,
            "label": label,
            "score": round(self.score, 6),
            "grid": [[round(float(v), 4) for v in row] for row in self.grid],
            "png": base64.b64encode(self.png).decode("ascii"),
        }


class Explainer:
    """Explains one head's label for a batch of model inputs, with the served model's map outputs."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.heads = {h.key: h for h in metadata.heads}
        self._blank: dict[str, np.ndarray] = {}  # head name: the maps of a blank (white) input, rows x columns x labels

    def head(self, key: str | None) -> Head:
        """The head a request names (default the article head, else the first); UnknownHead or NotAvailable."""
        if self.metadata.explain is None:
            raise NotAvailable(
                "the served model has no explanation outputs (add them with `vitrine export explainable`)"
            )
        if key is None:
            head = self.heads.get(DEFAULT_HEAD_KEY) or self.metadata.heads[0]
        elif key not in self.heads:
            raise UnknownHead(f"no head {key!r}; the model has {', '.join(self.heads)}")
        else:
            head = self.heads[key]
        if head.name not in self.metadata.explain.outputs:
            raise NotAvailable(f"the served model has no explanation output for head {head.key!r}")
        return head

    @staticmethod
    def label_index(head: Head, label: str | None) -> int | None:
        """The index of a requested label (None: each image's top label); UnknownLabel when the head lacks it."""
        if label is None:
            return None
        try:
            return head.labels.index(label)
        except ValueError:
            raise UnknownLabel(f"head {head.key!r} has no label {label!r}") from None

    def explain(self, run: RunOutputs, pixels: np.ndarray, head: Head, label: int | None) -> list[Explanation]:
        """Explain `label` (or each image's top label) of `head` for a uint8 NHWC batch."""
        probabilities, maps = self.maps(run, pixels, head)
        explained = []
        for image, probs, cams in zip(pixels, probabilities, maps, strict=True):
            index = int(probs.argmax()) if label is None else label
            grid = heat(cams[..., index])
            picture = heatmap_png(image, self.spread(grid, image.shape[0]))
            explained.append(Explanation(head, head.labels[index], float(probs[index]), grid, picture))
        return explained

    def spread(self, grid: np.ndarray, size: int) -> np.ndarray:
        """The grid's heat at every pixel of the `size` x `size` input, with its cells where the model has them."""
        explain = self.metadata.explain
        assert explain is not None
        return upsampled(grid, size, explain.cell_px, explain.first_centre_px)

    def maps(self, run: RunOutputs, pixels: np.ndarray, head: Head) -> tuple[np.ndarray, np.ndarray]:
        """The head's probabilities (images x labels) and maps (images x rows x columns x labels) in one run.

        Each map is the photo's less a blank white input's: what the photo adds to each cell's evidence over
        the studio background (a cell sees far beyond its square, and near the pad it sees white). The cells
        still sum, exactly, to the label's logit less the blank input's."""
        assert self.metadata.explain is not None  # `head` refused the request otherwise
        name = self.metadata.explain.outputs[head.name]
        if head.name not in self._blank:  # once per head: the same for every request
            blank = np.full((1, *pixels.shape[1:]), 255, dtype=np.uint8)
            self._blank[head.name] = np.asarray(run([name], blank)[0][0], dtype=np.float32)
        logits, maps = run([head.output, name], pixels)
        return softmax(np.asarray(logits, dtype=np.float32)), np.asarray(maps, dtype=np.float32) - self._blank[
            head.name
        ]


def heat(cam: np.ndarray) -> np.ndarray:
    """A label's map (rows x columns) as heat from 0 (the cell with the least evidence for it) to 1 (the most);
    all 0 when every cell says the same."""
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam)


def upsampled(grid: np.ndarray, size: int, cell_px: float, first_centre_px: float) -> np.ndarray:
    """The grid's heat at every pixel of a `size` x `size` square, linear between the cells' centres (cell i is
    centred on pixel first_centre_px + i * cell_px) and flat beyond the outermost ones."""
    rows, columns = grid.shape
    values: np.ndarray = _spread(rows, size, cell_px, first_centre_px) @ grid
    values = values @ _spread(columns, size, cell_px, first_centre_px).T
    return values


def _spread(cells: int, size: int, cell_px: float, first_centre_px: float) -> np.ndarray:
    """Weights (size x cells) of linear interpolation between cell centres, for each pixel (by index)."""
    position = np.clip((np.arange(size) - first_centre_px) / cell_px, 0, cells - 1)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, cells - 1)
    weights = np.zeros((size, cells), dtype=np.float32)
    weights[np.arange(size), below] += 1 - (position - below)
    weights[np.arange(size), above] += position - below
    return weights


def heatmap_png(pixels: np.ndarray, values: np.ndarray) -> bytes:
    """The heat per pixel (0 to 1) over the model's input (the photo fitted and centred on its pad), coloured,
    as PNG bytes."""
    colours = COLOUR_MAP[np.clip(values * 255, 0, 255).astype(np.uint8)]
    opacity = (HEAT_OPACITY * values)[..., None]
    blended = pixels.astype(np.float32) * (1 - opacity) + colours * opacity
    out = io.BytesIO()
    # compress_level 1: a picture of 128 px compresses well anyway, and the answer should not wait for zlib
    Image.fromarray(blended.round().astype(np.uint8), mode="RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()
