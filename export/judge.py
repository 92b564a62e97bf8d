"""Top-1 of a running service's answers on labelled catalogue photos, the way the blind hold-out is judged.

    python -m export.judge --url http://localhost:8000 --data ../shared/data/products \
        --split runs/<work>/split.json --subset test

Each photo goes to the service as a raw `image/jpeg` body, once to `/classify` and once to `/attributes`;
each answer is compared with the photo's CSV labels. `/models` maps the API keys to CSV columns. Every photo
with a label counts, including those of classes the model never predicts (too rare when it was trained);
they are also reported apart. Only the standard library talks to the service.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from export.data import find_csv, iter_images


def labelled_rows(csv_path: Path, id_column: str) -> dict[str, dict[str, str]]:
    """Every row's values by id (an empty value means no label for that column). Unlike
    `export.data.read_labels`, rows with empty columns are kept: a photo still counts for its other columns."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return {
            row[id_column].strip(): {c: (v or "").strip() for c, v in row.items() if c is not None}
            for row in csv.DictReader(handle)
            if (row.get(id_column) or "").strip()
        }


def _post(url: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/jpeg"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def answers(url: str, photo: bytes) -> dict[str, str]:
    """The service's top label per API key for one photo (category levels and attributes)."""
    category = _post(f"{url}/classify", photo)["results"][0]
    attributes = _post(f"{url}/attributes", photo)["results"][0]
    if category["status"] != "ok" or attributes["status"] != "ok":
        raise RuntimeError(f"the service refused a photo: {category.get('error') or attributes.get('error')}")
    labels = {"article": category["category"]["label"]}
    labels.update({level: category["category"][level]["label"] for level in ("sub", "master")})
    labels.update({key: value["label"] for key, value in attributes["attributes"].items()})
    return labels


def judge(url: str, photos: dict[str, bytes], truth: dict[str, dict[str, str]], *, clients: int = 8) -> dict[str, Any]:
    """Top-1 per CSV column over the photos, overall and over the labels the model knows."""
    with urllib.request.urlopen(f"{url}/models", timeout=10) as response:
        model = json.load(response)["models"][0]
    columns = {(h["level"] if h["role"] == "category" else h["key"]): h["name"] for h in model["heads"]}
    known = {h["name"]: set(h["labels"]) for h in model["heads"]}
    ids = sorted(photos)
    with ThreadPoolExecutor(clients) as pool:
        answered = dict(zip(ids, pool.map(lambda i: answers(url, photos[i]), ids), strict=True))
    right: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    right_known: Counter[str] = Counter()
    seen_known: Counter[str] = Counter()
    for photo_id, labels in answered.items():
        for key, column in columns.items():
            expected = truth[photo_id].get(column)
            if not expected:
                continue
            hit = labels[key] == expected
            seen[column] += 1
            right[column] += hit
            if expected in known[column]:
                seen_known[column] += 1
                right_known[column] += hit
    return {
        "model": {k: model[k] for k in ("name", "version", "precision", "provider") if k in model},
        "photos": len(ids),
        "top1": {c: right[c] / seen[c] for c in columns.values() if seen[c]},
        "top1_known_labels": {c: right_known[c] / seen_known[c] for c in columns.values() if seen_known[c]},
        "unknown_labels": {c: seen[c] - seen_known[c] for c in columns.values()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.judge", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8000", help="the running service")
    parser.add_argument("--data", type=Path, required=True, help="catalogue export: images (folder/tars) + CSV")
    parser.add_argument("--split", type=Path, help="a work folder's split.json, to judge one subset of it")
    parser.add_argument("--subset", default="test", help="which list of the split (train, val, test)")
    parser.add_argument("--limit", type=int, help="judge only the first N photos (by id)")
    parser.add_argument("--clients", type=int, default=8, help="requests in flight")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--out", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)

    rows = labelled_rows(find_csv(args.data), args.id_column)
    wanted = set(json.loads(args.split.read_text())[args.subset]) if args.split else set(rows)
    photos = {i: blob for i, blob in iter_images(args.data, ".jpg") if i in wanted and i in rows}
    if args.limit:
        photos = {i: photos[i] for i in sorted(photos)[: args.limit]}
    if not photos:
        print("no labelled photos to judge", file=sys.stderr)
        return 1
    result = judge(args.url, photos, rows, clients=args.clients)
    print(f"{result['model']} on {result['photos']} photos")
    print("| column | top-1 | top-1 on labels the model knows | photos with an unknown label |")
    print("|---|---|---|---|")
    for column, value in result["top1"].items():
        known = result["top1_known_labels"].get(column, float("nan"))
        print(f"| {column} | {value:.4f} | {known:.4f} | {result['unknown_labels'][column]} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
