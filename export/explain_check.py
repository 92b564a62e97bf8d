"""Do the explanations point at the product? Two checks on a catalogue split, with an explainable model file.

    python -m export.explain_check --data ../shared/data/products --model models/product-classifier/4

For each photo of the split (the model's input: the photo fitted and centred on the white pad), the top label of
the head is explained, and:

- on the product: the centre of the hottest cell is a product pixel (not the white studio background or pad);
- deletion: blanking (to white) the fifth of the product's pixels where the heat is highest lowers the label's
  score more than blanking a random fifth of them. The random fifth is chosen as the hottest fifth of a random
  map of the same grid (each cell's heat drawn uniformly), so that both blank a region of the same smoothness.

It prints the share of photos that pass each check.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from app.explain import Explainer, heat
from export.config import DEFAULT_CONFIG, ExportConfig
from export.convert import cpu_session
from export.pipeline import prepare
from export.steps import model_file

log = logging.getLogger(__name__)

WHITE_ABOVE = 235  # a pixel whose every channel is above this is studio white (JPEG leaves it a few levels off)
FIFTH = 0.2
BATCH = 64


def product_mask(pixels: np.ndarray) -> np.ndarray:
    """True where a uint8 NHWC batch shows the product (not near-white background or pad)."""
    return np.asarray((pixels <= WHITE_ABOVE).any(axis=-1))


def blanked(image: np.ndarray, mask: np.ndarray, values: np.ndarray, share: float, fill: str = "white") -> np.ndarray:
    """`image` with the `share` of its product pixels (by `mask`) where `values` is highest blanked: set to white
    (the background), or to the product's mean colour (its detail gone, its outline kept)."""
    order = np.argsort(-values[mask], kind="stable")
    chosen = np.flatnonzero(mask.ravel())[order[: max(1, round(share * int(mask.sum())))]]
    out = image.copy().reshape(-1, 3)
    out[chosen] = 255 if fill == "white" else image.reshape(-1, 3)[mask.ravel()].mean(axis=0).round()
    return out.reshape(image.shape)


def check(
    model: Path, pixels: np.ndarray, precision: str, head_key: str, seed: int, fill: str = "white"
) -> dict[str, float]:
    """The checks' pass rates over `pixels` (uint8 NHWC), explaining each image's top label of `head_key`."""
    path, meta = model_file(model, precision)
    session = cpu_session(path)
    explainer = Explainer(meta)
    head = explainer.head(head_key)

    def run(names: list[str], batch: np.ndarray) -> list[np.ndarray]:
        return list(session.run(names, {meta.preprocessing.input_name: batch}))

    rng = np.random.default_rng(seed)
    size = meta.preprocessing.size
    assert meta.explain is not None  # explainer.head refused the model otherwise
    cell, first = meta.explain.cell_px, meta.explain.first_centre_px
    centre_on, any_on, lowered, kept, unmoved = 0, 0, 0, 0, 0
    drops_hot: list[float] = []
    drops_random: list[float] = []
    for start in range(0, len(pixels), BATCH):
        batch = pixels[start : start + BATCH]
        probs, maps = explainer.maps(run, batch, head)
        labels = probs.argmax(axis=1)
        masks = product_mask(batch)
        hot_images, random_images = [], []
        for image, mask, cams, label in zip(batch, masks, maps, labels, strict=True):
            grid = heat(cams[..., label])
            row, column = np.unravel_index(int(grid.argmax()), grid.shape)
            centre_row, centre_column = (min(size - 1, round(first + i * cell)) for i in (row, column))
            centre_on += bool(mask[centre_row, centre_column])
            # the cell's own square: half a cell either side of its centre
            near = mask[
                max(0, round(centre_row - cell / 2)) : round(centre_row + cell / 2),
                max(0, round(centre_column - cell / 2)) : round(centre_column + cell / 2),
            ]
            any_on += bool(near.any())
            hot_images.append(blanked(image, mask, explainer.spread(grid, size), FIFTH, fill))
            random_grid = rng.random(grid.shape).astype(np.float32)
            random_images.append(blanked(image, mask, explainer.spread(random_grid, size), FIFTH, fill))
        index = np.arange(len(batch))
        base = probs[index, labels]
        hot = explainer.maps(run, np.stack(hot_images), head)[0][index, labels]
        rand = explainer.maps(run, np.stack(random_images), head)[0][index, labels]
        lowered += int((hot < rand).sum())
        unmoved += int(((np.abs(base - hot) < 0.005) & (np.abs(base - rand) < 0.005)).sum())
        kept += int(((base - hot) > 0).sum())
        drops_hot += list(base - hot)
        drops_random += list(base - rand)
        log.info("%d of %d photos", start + len(batch), len(pixels))
    n = len(pixels)
    return {
        "photos": n,
        "hottest_cell_centre_on_product": centre_on / n,
        "hottest_cell_touches_product": any_on / n,
        "hot_fifth_lowers_more_than_random_fifth": lowered / n,
        "hot_fifth_lowers_score": kept / n,
        "score_unmoved_by_either": unmoved / n,
        "mean_score_drop_hot_fifth": float(np.mean(drops_hot)),
        "mean_score_drop_random_fifth": float(np.mean(drops_random)),
    }


def main(argv: list[str] | None = None) -> None:
    """Print the checks' pass rates on the test (or validation) split of the default config's catalogue."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="catalogue export: images (folder/tars) + CSV")
    parser.add_argument("--model", type=Path, required=True, help="an explainable version folder")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the config whose split to use")
    parser.add_argument("--work", type=Path, default=Path("runs/product-classifier"), help="catalogue cache")
    parser.add_argument("--precision", default="int8", help="which file of the version folder")
    parser.add_argument("--head", default="article", help="the head to explain (its key)")
    parser.add_argument("--subset", choices=["test", "val"], default="test")
    parser.add_argument("--limit", type=int, help="only the first N photos of the split")
    parser.add_argument("--seed", type=int, default=0, help="for the random fifth")
    parser.add_argument("--fill", choices=["white", "mean"], default="white", help="what blanked pixels become")
    args = parser.parse_args(argv)
    splits = prepare(args.data, ExportConfig.load(args.config), args.work)
    pixels = getattr(splits, args.subset).pixels[: args.limit]
    for name, value in check(args.model, pixels, args.precision, args.head, args.seed, args.fill).items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
