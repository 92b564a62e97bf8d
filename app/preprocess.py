"""Decode image bytes and turn them into the model's uint8 NHWC input, exactly as in training."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import time
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ImageError, ImageTooLarge, UnsupportedFormat
from app.schema import Preprocessing

PR_SET_PDEATHSIG = 1  # linux/prctl.h

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})

# Pillow's own bomb check raises only above 2x its limit; the service sets its own limit per call.
Image.MAX_IMAGE_PIXELS = None


def to_rgb(image: Image.Image, pad_colour: tuple[int, int, int]) -> Image.Image:
    """Convert any mode to RGB; transparency is composited on the pad colour (white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*pad_colour, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if image.mode == "I;16" or image.mode == "I":
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    return image.convert("RGB")


def fitted_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the longest side scaled to `size`, aspect kept, each at least 1 pixel."""
    scale = size / max(width, height)
    return max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))


def fit_and_pad(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Scale the longest side to `spec.size` (aspect kept), centre on a square canvas, return HxWx3 uint8."""
    size = spec.size
    width, height = image.size
    new_w, new_h = fitted_size(width, height, size)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    # Pasting onto a Pillow canvas is cheaper than filling and slicing a numpy array (same pixels).
    canvas = Image.new("RGB", (size, size), spec.pad_colour)
    canvas.paste(image, ((size - new_w) // 2, (size - new_h) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Identify and header-check image bytes without decoding the pixels."""
    if not data:
        raise ImageError("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise UnsupportedFormat("not a recognised image format (JPEG, PNG, WebP, BMP, GIF, TIFF)") from exc
    except Exception as exc:  # Pillow raises many types for corrupt headers
        raise ImageError("image header could not be read") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormat(f"unsupported image format {image.format}")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} pixels, more than the limit of {max_pixels}")
    return image


def decode(data: bytes, spec: Preprocessing, *, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode image bytes into the model input (HxWx3 uint8); raises `ImageError` subclasses."""
    image = open_image(data, max_pixels=max_pixels)
    try:
        if image.format == "JPEG":
            # JPEG can decode at 1/2, 1/4, 1/8 scale directly: far cheaper for large photos.
            image.draft("RGB", (spec.size, spec.size))
        image.seek(0)  # animated images: the first frame
        if image.getexif().get(0x0112, 1) != 1:  # only photos with an orientation tag need turning
            image = ImageOps.exif_transpose(image) or image
        image = to_rgb(image, spec.pad_colour)
        return fit_and_pad(image, spec)
    except ImageError:
        raise
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError("image data is corrupt or truncated") from exc


def decode_many(
    blobs: list[bytes | ImageError], spec: Preprocessing, *, max_bytes: int, max_pixels: int
) -> tuple[list[np.ndarray | ImageError], list[float]]:
    """Decode a chunk of images: each one's model input or its `ImageError`, and each decode's seconds.

    A module-level function of picklable arguments, so the same chunk can run on a decode thread or in
    a decode process (`VITRINE_DECODE_PROCESSES`). Items that are already errors (invalid base64, say)
    pass through untimed.
    """
    out: list[np.ndarray | ImageError] = []
    seconds: list[float] = []
    for blob in blobs:
        if isinstance(blob, ImageError):
            out.append(blob)
            continue
        started = time.perf_counter()
        try:
            if len(blob) > max_bytes:
                raise ImageTooLarge(f"image is {len(blob)} bytes, more than the limit of {max_bytes}")
            out.append(decode(blob, spec, max_pixels=max_pixels))
        except ImageError as error:
            out.append(error)
        seconds.append(time.perf_counter() - started)
    return out, seconds


def leave_process_group() -> None:
    """Initializer of decode processes: a process group of their own, so that SIGINT/SIGTERM sent to the
    service's group (Ctrl-C, some supervisors) do not kill them mid-drain; the service shuts its pool
    down itself. They keep the default signal handling, so a broken pool can still terminate them. On
    Linux they are killed when the service dies (PR_SET_PDEATHSIG), which no longer reaches them through
    its process group."""
    parent = os.getppid()
    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):  # prctl is Linux's
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the service died before the death signal was set
        os._exit(1)


def started_worker() -> int:
    """The pid of the decode process running this task, which has therefore run its initializer. It holds
    the process a moment, so that the other processes take the tasks submitted beside it."""
    time.sleep(0.02)
    return os.getpid()


def decode_pool(threads: int, processes: int = 0) -> tuple[Executor, int]:
    """Where decoding runs and with how many workers: `processes` spawned processes when > 0 (many-core
    hosts, where decoding threads share one GIL), else `threads` threads."""
    if processes:
        context = get_context("spawn")  # never fork a process that holds onnxruntime's threads
        return ProcessPoolExecutor(processes, mp_context=context, initializer=leave_process_group), processes
    return ThreadPoolExecutor(threads, thread_name_prefix="vitrine-decode"), threads
