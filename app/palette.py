"""The product's own colours: its pixels clustered in CIELAB, each swatch named in the catalogue's colour words.

Pixels are those of the model's input (the photo fitted on its white pad, transparency already composited on
white), sampled on a grid; near-white pixels are the studio background and are left out. Pillow's median-cut
quantiser clusters them in Lab, where distances follow perceived colour differences. Each swatch is named by
the shades each colour name has in training photos (`palette.json`, written by `vitrine export palette`) and
by what the colour head says about the whole photo.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms
from pydantic import BaseModel, Field

PALETTE_FILE = "palette.json"
MAX_COLOURS = 5
SAMPLE_STEP = 4  # every fourth pixel of every fourth row: the 60x80 catalogue photos are upscaled 1.6x
WHITE_ABOVE = 235  # every channel above this: studio white (JPEG leaves the background a few levels off 255)
MIN_PRODUCT_PIXELS = 12  # fewer sampled product pixels than this: no palette (a blank or all-white image)
MIN_SHARE = 0.03  # swatches smaller than this share of the product are specks (edges, JPEG ringing)


class Shade(BaseModel):
    """One typical shade of a colour name, in CIELAB (D65)."""

    lab: tuple[float, float, float]
    weight: float = Field(gt=0, le=1, description="Share of the name's training swatches near this shade.")


class Shades(BaseModel):
    """What `palette.json` holds: each colour name's typical shades, learned from training photos, and how the
    colour head's opinion is weighed against a swatch's distance to them."""

    head: str = Field(description="The colour head whose labels are the names (e.g. `baseColour`).")
    names: dict[str, list[Shade]] = Field(description="Colour name to its typical shades.")
    spread: float = Field(gt=0, description="Lab distance at which a shade's likelihood falls to exp(-1/2).")
    head_weight: float = Field(ge=0, description="Exponent of the head's probability in a name's score.")
    second_above: float = Field(
        1.0,
        ge=0,
        le=1,
        description="The head's top name, and its second when that has at least this probability, each go to "
        "the swatch that looks most like it, if one is within `reach` (the head saw the colour; the swatch says "
        "where it is).",
    )
    reach: float = Field(
        4.5, gt=0, description="How unlike a name's shades (in log-likelihood) a swatch may be and still take it."
    )
    lightness_weight: float = Field(
        1.0, gt=0, le=1, description="Weight of lightness in distances (lighting changes it more than hue)."
    )
    fitted_on: str = Field("", description="Which photos the shades were learned from, and how.")

    @classmethod
    def read(cls, folder: Path) -> Shades | None:
        """The version folder's `palette.json`, or None when it has none."""
        path = folder / PALETTE_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass(frozen=True)
class Swatch:
    """One cluster of the product's pixels: its mean colour (Lab and RGB) and its share of the product."""

    lab: np.ndarray
    rgb: np.ndarray
    share: float

    @property
    def hex(self) -> str:
        r, g, b = (round(float(v)) for v in self.rgb)
        return f"#{r:02x}{g:02x}{b:02x}"


@functools.cache
def _to_lab() -> ImageCms.ImageCmsTransform:
    """littlecms's sRGB to CIELAB (D65) transform, built once on first use."""
    return ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB", 6500), "RGB", "LAB")


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L 0-100, a and b signed) of uint8 RGB pixels of any shape (..., 3), as float32."""
    flat = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(1, -1, 3)
    converted = ImageCms.applyTransform(Image.fromarray(flat, mode="RGB"), _to_lab())
    assert converted is not None  # applyTransform returns None only when asked to work in place
    raw = np.asarray(converted)
    lab = np.empty(raw.shape, dtype=np.float32)
    lab[..., 0] = raw[..., 0] * (100 / 255)  # Pillow stores L scaled to 0-255, a and b as signed bytes
    lab[..., 1:] = raw[..., 1:].view(np.int8)
    return lab.reshape(rgb.shape)


def product_pixels(pixels: np.ndarray) -> np.ndarray:
    """The sampled product pixels (n x 3 uint8) of a model input (H x W x 3), background left out.

    Samples next to the background are left out too: resizing blends the product's edge with white into pale
    tints that are not the product's colours (unless that leaves too few, as for a thin chain)."""
    sample = pixels[::SAMPLE_STEP, ::SAMPLE_STEP]
    product = sample.min(axis=2) <= WHITE_ABOVE
    inner = product.copy()
    inner[1:] &= product[:-1]
    inner[:-1] &= product[1:]
    inner[:, 1:] &= product[:, :-1]
    inner[:, :-1] &= product[:, 1:]
    keep = inner if np.count_nonzero(inner) >= MIN_PRODUCT_PIXELS else product
    chosen: np.ndarray = sample[keep]
    return chosen


def swatches(pixels: np.ndarray, colours: int = MAX_COLOURS) -> list[Swatch]:
    """Up to `colours` swatches of the product in a model input, largest first; [] when it shows no product."""
    rgb = product_pixels(pixels)
    if len(rgb) < MIN_PRODUCT_PIXELS:
        return []
    lab = to_lab(rgb)
    # The quantiser works on 8-bit RGB images: Lab fits in bytes as (L, a + 128, b + 128), one unit per Lab unit,
    # so its distances are Lab distances (CIE76).
    packed = np.clip(lab + np.array([0, 128, 128], dtype=np.float32), 0, 255).round().astype(np.uint8)
    quantised = Image.fromarray(packed[None], mode="RGB").quantize(
        colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    index = np.asarray(quantised).ravel()
    counts = np.bincount(index, minlength=colours)
    both = np.concatenate([lab, rgb.astype(np.float32)], axis=1)
    sums = np.stack([np.bincount(index, weights=both[:, c], minlength=colours) for c in range(6)], axis=1)
    order = np.argsort(-counts, kind="stable")
    return [
        Swatch(sums[k, :3] / counts[k], sums[k, 3:] / counts[k], float(counts[k] / len(rgb)))
        for k in order
        if counts[k]
    ]


class Namer:
    """Names swatches with the learned shades and the colour head's probabilities."""

    def __init__(self, shades: Shades, labels: list[str]) -> None:
        unknown = sorted(set(shades.names) - set(labels))
        if unknown:
            raise ValueError(f"{PALETTE_FILE} names colours the {shades.head} head lacks: {unknown}")
        self.shades = shades
        self.names = [n for n in labels if n in shades.names]  # the head's order; `Multi` has no shade
        self.columns = np.array([labels.index(n) for n in self.names])
        # Each name's shades padded to the most any name has (a missing shade weighs nothing): one array
        # operation scores every swatch against every shade.
        most = max(len(shades.names[n]) for n in self.names)
        self.centres = np.zeros((len(self.names), most, 3), dtype=np.float32)
        self.log_weights = np.full((len(self.names), most), -np.inf, dtype=np.float32)
        for k, name in enumerate(self.names):
            for j, shade in enumerate(shades.names[name]):
                self.centres[k, j] = shade.lab
                self.log_weights[k, j] = np.log(shade.weight)
        self.scale = np.array([shades.lightness_weight, 1.0, 1.0], dtype=np.float32)

    def likelihoods(self, labs: np.ndarray) -> np.ndarray:
        """Each swatch's log-likelihood under each name's shades (swatches x names)."""
        gaps = ((labs[:, None, None, :] - self.centres[None]) * self.scale) ** 2
        per_shade = self.log_weights - gaps.sum(axis=3) / (2 * self.shades.spread**2)
        likelihood: np.ndarray = per_shade.max(axis=2)
        return likelihood

    def assign(self, labs: np.ndarray, probs: np.ndarray) -> list[str]:
        """A name per swatch: the best by shade likelihood and the head's opinion, then the head's top names
        (see `Shades.second_above`) given to the swatches that look most like them."""
        shades = self.shades
        likelihood = self.likelihoods(labs)
        head = probs[self.columns].astype(np.float32)
        chosen = (likelihood + shades.head_weight * np.log(np.maximum(head, 1e-6))).argmax(axis=1)
        ranked = np.argsort(-head, kind="stable")
        reserved = [int(ranked[0])]
        if len(ranked) > 1 and head[ranked[1]] >= shades.second_above:
            reserved.append(int(ranked[1]))
        taken: set[int] = set()
        for name in reserved:
            fits = likelihood[:, name].copy()
            fits[list(taken)] = -np.inf
            swatch = int(fits.argmax())
            if fits[swatch] > -shades.reach:
                chosen[swatch] = name
                taken.add(swatch)
        return [self.names[int(k)] for k in chosen]

    def name(self, found: list[Swatch], probs: np.ndarray) -> list[tuple[str, Swatch, float]]:
        """(name, its largest swatch, the name's share) per name, by share: swatches with the same name merge."""
        kept = [s for s in found if s.share >= MIN_SHARE] or found[:1]
        if not kept:
            return []
        merged: dict[str, tuple[Swatch, float]] = {}
        for swatch, name in zip(kept, self.assign(np.stack([s.lab for s in kept]), probs), strict=True):
            largest, share = merged.get(name, (swatch, 0.0))
            merged[name] = (largest, share + swatch.share)
        total = sum(share for _, share in merged.values())  # specks left out: shares of what is named
        ordered = sorted(merged.items(), key=lambda item: -item[1][1])
        return [(name, swatch, share / total) for name, (swatch, share) in ordered]


def palette(namer: Namer, pixels: np.ndarray, probs: np.ndarray) -> list[dict[str, Any]]:
    """The `palette` answer of one image: [{"hex", "name", "share"}], largest share first."""
    named = namer.name(swatches(pixels), probs)
    return [{"hex": swatch.hex, "name": name, "share": round(share, 4)} for name, swatch, share in named]
