"""`vitrine export palette`: learn each colour name's typical shades from training photos into `palette.json`.

For every training photo whose catalogue colour is a single colour of the colour head (not `Multi`), the
product's swatches are found as the service finds them (`app.palette.swatches`). Which swatch is the
labelled colour is not known (a shirt is worn over skin and jeans), so the fit alternates: start from each
photo's largest swatch, cluster a name's chosen swatches in Lab (scikit-learn's k-means) into a few typical
shades, then choose again in each photo the swatch that those shades explain best, weighed by its size.
How much the colour head's opinion counts against the shades is chosen on the validation split, for the
share of photos whose catalogue colour is among the palette's names; the test split measures it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from app.palette import MIN_SHARE, PALETTE_FILE, Namer, Shade, Shades, swatches
from app.schema import Head, ModelMetadata
from export.convert import cpu_session
from export.data import Catalogue

log = logging.getLogger(__name__)

MULTI = "Multi"  # the catalogue's word for several colours: a photo's mix, not a shade
SHADES_PER_NAME = 3
MIN_PHOTOS_PER_SHADE = 15
ROUNDS = 3
HEAD_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
SECOND_ABOVE = (0.05, 0.1, 0.2, 0.3, 1.0)  # 1.0: never the second name
BATCH = 128


@dataclass
class Photos:
    """The swatches of a split's photos (Lab, shares) with each photo's colour label and head probabilities."""

    labs: list[np.ndarray]  # per photo: swatches x 3
    shares: list[np.ndarray]  # per photo: swatches
    labels: np.ndarray  # the colour head's label index per photo (-1: not one of its labels)
    probs: np.ndarray | None = None  # photos x labels, the head's answer


def colour_head(meta: ModelMetadata) -> Head:
    """The model's colour head: the attribute head named like `baseColour` or keyed `colour`."""
    for head in meta.heads:
        if head.key == "colour" or "colour" in head.name.lower() or "color" in head.name.lower():
            return head
    raise ValueError(f"the model has no colour head (heads: {', '.join(h.name for h in meta.heads)})")


def photos(data: Catalogue, head: Head) -> Photos:
    """The swatches of every photo of a split, with its label in the head's label order."""
    labs, shares = [], []
    for image in data.pixels:
        found = swatches(image)
        labs.append(np.array([s.lab for s in found], dtype=np.float32).reshape(-1, 3))
        shares.append(np.array([s.share for s in found], dtype=np.float32))
    classes = data.classes[head.name]
    position = {label: head.labels.index(label) if label in head.labels else -1 for label in classes}
    raw = data.labels[head.name]
    labels = np.array([position[classes[i]] if i >= 0 else -1 for i in raw])
    return Photos(labs, shares, labels)


def head_probabilities(model: Path, meta: ModelMetadata, head: Head, pixels: np.ndarray) -> np.ndarray:
    """The colour head's probabilities for a split's photos, from the model file."""
    session = cpu_session(model)
    out = []
    for start in range(0, len(pixels), BATCH):
        logits = session.run([head.output], {meta.preprocessing.input_name: pixels[start : start + BATCH]})[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        out.append(probs / probs.sum(axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def fit_shades(train: Photos, head: Head) -> tuple[dict[str, list[Shade]], float]:
    """Each name's typical shades, and the spread of chosen swatches around them."""
    names = [n for n in head.labels if n != MULTI]
    chosen: dict[str, np.ndarray] = {}
    for name in names:
        k = head.labels.index(name)
        rows = [i for i in np.flatnonzero(train.labels == k) if len(train.labs[i])]
        chosen[name] = np.stack([train.labs[i][0] for i in rows]) if rows else np.empty((0, 3), np.float32)
    shades: dict[str, list[Shade]] = {}
    spread = 10.0
    for round_ in range(ROUNDS):
        shades = {name: _cluster(points) for name, points in chosen.items() if len(points)}
        gaps = []
        for name in shades:
            k = head.labels.index(name)
            centres = np.array([s.lab for s in shades[name]], dtype=np.float32)
            picks = []
            for i in np.flatnonzero(train.labels == k):
                if not len(train.labs[i]):
                    continue
                distance = np.sqrt(((train.labs[i][:, None, :] - centres[None]) ** 2).sum(axis=2)).min(axis=1)
                # a swatch the shades explain well, preferring the larger ones
                score = -(distance**2) / (2 * spread**2) + np.log(train.shares[i])
                best = int(score.argmax())
                picks.append(train.labs[i][best])
                gaps.append(float(distance[best]))
            chosen[name] = np.stack(picks)
        spread = float(np.sqrt(np.mean(np.square(gaps))))
        log.info("round %d: %d names, spread %.2f", round_ + 1, len(shades), spread)
    shades = {name: _cluster(points) for name, points in chosen.items() if len(points)}
    return shades, spread


def _cluster(points: np.ndarray) -> list[Shade]:
    """A few shades of one name: k-means centres in Lab, weighted by how many swatches each holds."""
    k = int(max(1, min(SHADES_PER_NAME, len(points) // MIN_PHOTOS_PER_SHADE)))
    model = KMeans(n_clusters=k, n_init=4, random_state=0).fit(points)
    counts = np.bincount(model.labels_, minlength=k)
    return [
        Shade(lab=(float(c[0]), float(c[1]), float(c[2])), weight=float(n / counts.sum()))
        for c, n in zip(model.cluster_centers_, counts, strict=True)
        if n
    ]


def named_share(namer: Namer, split: Photos, head: Head) -> tuple[float, int]:
    """Share of photos with a single catalogue colour that is among the palette's names, and how many."""
    assert split.probs is not None
    multi = head.labels.index(MULTI) if MULTI in head.labels else -2
    hits, count = 0, 0
    for labs, shares, label, probs in zip(split.labs, split.shares, split.labels, split.probs, strict=True):
        if label < 0 or label == multi:
            continue
        count += 1
        if not len(labs):
            continue
        keep = shares >= MIN_SHARE
        keep[0] = True  # as Namer.name: the largest swatch is named even when all are specks
        hits += head.labels[label] in set(namer.assign(labs[keep], probs))
    return hits / max(1, count), count


def tune(base: Shades, labels: list[str], val: Photos, head: Head) -> Shades:
    """The head weight and second-name threshold with the best named share on the validation split."""
    best: tuple[float, Shades] = (-1.0, base)
    for weight in HEAD_WEIGHTS:
        for second in SECOND_ABOVE:
            candidate = base.model_copy(update={"head_weight": weight, "second_above": second})
            share, _ = named_share(Namer(candidate, labels), val, head)
            log.info("head weight %.2f, second name above %.2f: %.4f on validation", weight, second, share)
            if share > best[0]:
                best = (share, candidate)
    return best[1]


def fit_palette(
    folder: Path, train: Catalogue, val: Catalogue, test: Catalogue, *, precision: str = "int8"
) -> dict[str, float]:
    """Fit the shades on `train`, tune on `val`, write `palette.json` into `folder`; return the figures."""
    meta = ModelMetadata.read(folder)
    head = colour_head(meta)
    model = folder / meta.files.get(precision, meta.files["fp32"])
    log.info("swatches of %d training photos", len(train))
    shades, spread = fit_shades(photos(train, head), head)
    splits = {}
    for name, data in (("validation", val), ("test", test)):
        split = photos(data, head)
        split.probs = head_probabilities(model, meta, head, data.pixels)
        splits[name] = split
    base = Shades(
        head=head.name,
        names=shades,
        spread=round(spread, 3),
        head_weight=1.0,
        fitted_on=f"{len(train)} training photos of {meta.name} v{meta.version}'s catalogue split",
    )
    tuned = tune(base, head.labels, splits["validation"], head)
    path = folder / PALETTE_FILE
    path.write_text(tuned.model_dump_json(indent=1) + "\n", encoding="utf-8")
    figures: dict[str, float] = {"head_weight": tuned.head_weight, "second_above": tuned.second_above}
    for name, split in splits.items():
        assert split.probs is not None
        share, count = named_share(Namer(tuned, head.labels), split, head)
        alone = tuned.model_copy(update={"head_weight": 0.0, "second_above": 1.0, "reach": 1e-9})
        shades_only, _ = named_share(Namer(alone, head.labels), split, head)
        multi = head.labels.index(MULTI) if MULTI in head.labels else -2
        single = (split.labels >= 0) & (split.labels != multi)
        head_top1 = float((split.probs[single].argmax(axis=1) == split.labels[single]).mean())
        figures |= {
            f"{name}.photos": count,
            f"{name}.named": share,
            f"{name}.shades_only": shades_only,
            f"{name}.head_top1": head_top1,
        }
    log.info("wrote %s", path)
    return figures
