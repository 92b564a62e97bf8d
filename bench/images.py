"""Real catalogue JPEGs for the load, and the request bodies (multipart, raw or V2 JSON) built from them."""

from __future__ import annotations

import base64
import json
import tarfile
from itertools import cycle, islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "tests" / "data" / "catalogue"
PRODUCTS = ROOT.parent / "shared" / "data" / "products"
BOUNDARY = "vitrinebench7d3f0a1c"
MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
V2_TYPE = "application/json"


def load_jpegs(count: int, products: Path = PRODUCTS, catalogue: Path = CATALOGUE) -> tuple[list[bytes], str]:
    """Up to `count` real JPEGs: the first members of the catalogue tars, else the committed test photos.

    Returns the images and a line saying where they came from. Files are read in place, never copied.
    """
    images: list[bytes] = []
    tars = sorted(products.glob("images-*.tar")) if products.is_dir() else []
    for tar in tars:
        with tarfile.open(tar) as archive:
            for member in archive:
                if len(images) >= count:
                    break
                if member.isfile() and member.name.endswith(".jpg"):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        images.append(handle.read())
        if len(images) >= count:
            break
    if images:
        return images, f"{len(images)} JPEGs from {', '.join(t.name for t in tars)} in {products}"
    images = [p.read_bytes() for p in sorted(catalogue.glob("*.jpg"))][:count]
    if not images:
        raise FileNotFoundError(f"no catalogue JPEGs under {products} or {catalogue}")
    return images, f"{len(images)} JPEGs from {catalogue}"


def multipart_body(images: list[bytes], field: str = "images", boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body with one file part per image, all under the same field name."""
    chunks: list[bytes] = []
    for i, data in enumerate(images):
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{i}.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
        )
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def v2_body(images: list[bytes]) -> bytes:
    """An Open Inference (V2) protocol request, as MLServer takes it: one BYTES input of base64 JPEGs."""
    data = [base64.b64encode(image).decode("ascii") for image in images]
    request = {
        "inputs": [
            {
                "name": "images",
                "shape": [len(images)],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": data,
            }
        ]
    }
    return json.dumps(request, separators=(",", ":")).encode()


def raw_body(images: list[bytes]) -> bytes:
    """A one-image request's body: the JPEG bytes themselves."""
    return images[0]


def bodies(images: list[bytes], per_request: int, count: int, *, kind: str = "multipart") -> list[bytes]:
    """`count` request bodies of `per_request` images each, cycling through the images in order.

    `kind`: "multipart" (`multipart_body`), "raw" (the bare JPEG bytes, one image per request, sent as
    `image/jpeg`) or "v2" (`v2_body`).
    """
    build = {"multipart": multipart_body, "v2": v2_body, "raw": raw_body}[kind]
    if kind == "raw" and per_request != 1:
        raise ValueError("a raw body holds exactly one image")
    stream = cycle(images)
    return [build(list(islice(stream, per_request))) for _ in range(count)]


def write_bodies(folder: Path, payloads: list[bytes]) -> Path:
    """Write bodies as 00000.body, 00001.body, ... for the load generator's script; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, payload in enumerate(payloads):
        (folder / f"{i:05d}.body").write_bytes(payload)
    return folder
