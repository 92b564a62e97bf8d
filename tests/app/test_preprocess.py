"""Decoding and preprocessing: formats, modes, orientation, padding and refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.errors import ImageError, ImageTooLarge, UnsupportedFormat
from app.preprocess import decode
from app.schema import Preprocessing
from tests.images import encode, exif_rotated, jpeg_claiming, photo, png_bomb

SPEC = Preprocessing(size=64)


def test_catalogue_jpeg_is_fitted_and_padded_with_white(photos: list[bytes]) -> None:
    pixels = decode(photos[0], SPEC)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    # 60x80 portrait -> 48x64 centred: 8 columns of white padding each side.
    assert (pixels[:, :8] == 255).all() and (pixels[:, -8:] == 255).all()
    assert not (pixels[:, 8:56] == 255).all()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_other_formats_decode_like_the_jpeg(fmt: str) -> None:
    source = photo()
    reference = decode(encode(source, "PNG"), SPEC).astype(int)
    pixels = decode(encode(source, fmt), SPEC).astype(int)
    tolerance = 40 if fmt in ("GIF", "WEBP") else 1  # palette and lossy formats
    assert np.abs(pixels - reference).mean() < tolerance


def test_alpha_is_composited_on_white() -> None:
    image = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (5, 5, 15, 15))
    pixels = decode(encode(image, "PNG"), SPEC)
    assert tuple(pixels[2, 2]) == (255, 255, 255)
    assert tuple(pixels[32, 32]) == (0, 0, 255)


def test_greyscale_and_cmyk_become_rgb() -> None:
    grey = decode(encode(photo().convert("L"), "PNG"), SPEC)
    assert grey.shape == (64, 64, 3) and (grey[..., 0] == grey[..., 1]).all()
    cmyk = decode(encode(photo().convert("CMYK"), "JPEG"), SPEC)
    reference = decode(encode(photo(), "PNG"), SPEC).astype(int)
    assert np.abs(cmyk.astype(int) - reference).mean() < 12


def test_exif_orientation_is_applied() -> None:
    upright = decode(encode(photo(), "PNG"), SPEC).astype(int)
    rotated = decode(exif_rotated(), SPEC).astype(int)
    assert np.abs(rotated - upright).mean() < 12


def test_tiny_and_large_images() -> None:
    assert decode(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), SPEC).shape == (64, 64, 3)
    big = photo().resize((3000, 3000))
    assert decode(encode(big, "JPEG"), SPEC).shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", ImageError),
        (b"just some text", UnsupportedFormat),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", UnsupportedFormat),
        (png_bomb(), ImageTooLarge),
        (jpeg_claiming(65500, 65500), ImageTooLarge),
    ],
)
def test_bad_input_is_refused_with_a_code(data: bytes, error: type[ImageError]) -> None:
    with pytest.raises(error):
        decode(data, SPEC, max_pixels=40_000_000)


def test_truncated_jpeg_is_an_image_error(photos: list[bytes]) -> None:
    with pytest.raises(ImageError):
        decode(photos[0][: len(photos[0]) // 3], SPEC)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    pixels = decode(buffer.getvalue(), SPEC).astype(int)
    red, green, blue = pixels[32, 32]
    assert red > 150 and green < 50 and blue < 50
