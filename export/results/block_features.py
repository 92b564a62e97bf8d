"""Do the heads gain from the backbones' earlier layers? A stacked model on their pooled features (colour by default).

Run from the repository root (about five minutes on 2 cores):

    .venv/bin/python export/results/block_features.py --work runs/product-classifier \
        --model models/product-classifier/4/model.onnx

The final features of a fine-tuned backbone may have lost colour detail that earlier layers still hold
(the colour-histogram model of `export.posthoc` gained 0.6 points on test). This script adds a global
average and a global max pool to the output of some blocks of each member of the ensemble, fits a
logistic regression on those pooled features of the training photos, and adds its log-probabilities,
times a weight chosen on validation, to the model's colour answer. Two feature sets: the early and middle
blocks only (colour before abstraction), and all of them. `--head articleType` asks the same of another
head.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from catalogue_args import catalogue_parser, catalogue_splits
from onnx import helper
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from app.runtime import softmax
from export.data import IGNORE
from export.posthoc import regression_log_probs, top1

HEAD = "baseColour"
SPLITS = ("train", "val", "test")
# Block outputs (their project convolution) per member: Lite0 has blocks 0-15, Lite1 0-20.
BLOCKS = {"m0": (2, 4, 7, 10, 14, 15), "m1": (4, 7, 11, 15, 19, 20)}
EARLY = {"m0": (2, 4, 7), "m1": (4, 7)}
WEIGHTS = (0.2, 0.4, 0.6, 1.0)


def with_pooled_outputs(path: str) -> tuple[onnx.ModelProto, list[str]]:
    """The model with an average- and a max-pooled output added after each block in BLOCKS."""
    model = onnx.load(path)
    wanted = {
        f"{member}/backbone.net._blocks.{block}._project_conv.weight": f"{member}b{block}"
        for member, blocks in BLOCKS.items()
        for block in blocks
    }
    added = []
    for node in list(model.graph.node):
        if node.op_type == "Conv" and node.input[1] in wanted:
            for pool in ("Average", "Max"):
                name = f"{wanted[node.input[1]]}_{pool.lower()}"
                model.graph.node.append(helper.make_node(f"Global{pool}Pool", [node.output[0]], [name]))
                model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                added.append(name)
    if len(added) != 2 * sum(len(b) for b in BLOCKS.values()):
        raise SystemExit(f"expected a two-member ensemble of Lite0 and Lite1, found {added}")
    return model, added


def main() -> int:
    parser = catalogue_parser(__doc__)
    parser.add_argument("--model", default="models/product-classifier/4/model.onnx", help="FP32 ensemble file")
    parser.add_argument("--head", default=HEAD, help=f"the head (CSV column) to stack onto (default {HEAD})")
    args = parser.parse_args()
    head = args.head
    _, splits = catalogue_splits(args)
    model, pooled = with_pooled_outputs(args.model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [head, *pooled]
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        pixels = getattr(splits, split).pixels
        runs = [session.run(names, {"pixels": pixels[i : i + 64]}) for i in range(0, len(pixels), 64)]
        outputs[split] = {n: np.concatenate([r[k].reshape(len(r[k]), -1) for r in runs]) for k, n in enumerate(names)}
    labels = {split: getattr(splits, split).labels[head] for split in SPLITS}
    base = {split: np.log(softmax(outputs[split][head])) for split in SPLITS}
    classes = base["train"].shape[1]
    print(f"{head}, top-1; the stacked model's weight chosen on validation\n")
    print("| features | dimensions | stacked model alone (val / test) | weight | as served + stacked (val / test) |")
    print("|---|---|---|---|---|")
    print(
        f"| none (as served) | - | - | - | {top1(base['val'], labels['val']):.4f} / "
        f"{top1(base['test'], labels['test']):.4f} |"
    )
    early = tuple(f"{m}b{b}_" for m, blocks in EARLY.items() for b in blocks)
    for title, keys in (
        ("early and middle blocks", [n for n in pooled if n.startswith(early)]),
        ("all blocks", pooled),
    ):
        features = {s: np.concatenate([outputs[s][k] for k in keys], axis=1) for s in SPLITS}
        scaler = StandardScaler().fit(features["train"])
        features = {s: scaler.transform(f) for s, f in features.items()}
        known = labels["train"] != IGNORE
        regression = LogisticRegression(C=0.01, max_iter=500).fit(features["train"][known], labels["train"][known])
        stacked = {s: regression_log_probs(regression, features[s], classes) for s in SPLITS}
        weight = max(WEIGHTS, key=lambda w: top1(base["val"] + w * stacked["val"], labels["val"]))
        print(
            f"| {title} | {features['train'].shape[1]} | {top1(stacked['val'], labels['val']):.4f} / "
            f"{top1(stacked['test'], labels['test']):.4f} | {weight:g} | "
            f"{top1(base['val'] + weight * stacked['val'], labels['val']):.4f} / "
            f"{top1(base['test'] + weight * stacked['test'], labels['test']):.4f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
