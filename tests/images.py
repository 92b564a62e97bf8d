"""Real image bytes in many formats, made from a committed catalogue photo."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

CATALOGUE = Path(__file__).parent / "data" / "catalogue"


def photo(index: int = 0) -> Image.Image:
    """A real 60x80 catalogue photo."""
    return Image.open(sorted(CATALOGUE.glob("*.jpg"))[index]).convert("RGB")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """Image bytes in a given Pillow format."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header declares a huge image (the IDAT is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is rewritten to claim another size."""
    data = bytearray(encode(photo(), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def exif_rotated() -> bytes:
    """The photo stored sideways with an EXIF orientation tag saying 'rotate 90' (6)."""
    rotated = photo().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(rotated, "JPEG", exif=exif.tobytes())


def files(blobs: list[bytes], name: str = "images") -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart parts for `httpx`: each blob as a JPEG upload of the field `name`."""
    return [(name, (f"{i}.jpg", blob, "image/jpeg")) for i, blob in enumerate(blobs)]
