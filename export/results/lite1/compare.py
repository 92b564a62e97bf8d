"""Top-1 per head of two packaged INT8 models (default v3 and the Lite1 experiment, packaged as v4 under
models/product-classifier/4 for the comparison) on the validation and test splits. Run from the repository root."""
import numpy as np, onnxruntime as ort
from pathlib import Path
from export.config import ExportConfig
from export.pipeline import prepare
cfg = ExportConfig.load(Path("export/configs/product-classifier.toml"))
splits = prepare(Path("../shared/data/products"), cfg, Path("runs/lite1"))
heads = [h.column for h in cfg.heads]
for split_name in ("val", "test"):
    data = getattr(splits, split_name)
    for v in (3, 4):
        s = ort.InferenceSession(f"models/product-classifier/{v}/model.int8.onnx", providers=["CPUExecutionProvider"])
        outs = {h: [] for h in heads}
        for i in range(0, len(data.pixels), 256):
            r = s.run(heads, {"pixels": data.pixels[i:i+256]})
            for h, o in zip(heads, r): outs[h].append(o.argmax(1))
        acc = {}
        for h in heads:
            pred = np.concatenate(outs[h]); lab = data.labels[h]; ok = lab >= 0
            acc[h] = round(float((pred[ok] == lab[ok]).mean()), 4)
        print(split_name, f"v{v}", acc, "mean", round(float(np.mean(list(acc.values()))), 4), flush=True)
