"""Reading user images (init, target and image prompts) as tensors, with clear errors."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vqclip.core.limits import check_regular

if TYPE_CHECKING:  # torch is imported where tensors are made: `vqclip video` runs without it
    import torch

__all__ = [
    "MAX_IMAGE_PIXELS", "check_image", "load_image", "image_size", "read_pixels", "image_tensor", "to_rgb",
    "to_uint8",
]  # fmt: skip


# The most pixels vqclip decodes from one image (a 108-megapixel phone photo fits): a small
# file can claim a huge size (a decompression bomb), so the header is checked before decoding.
MAX_IMAGE_PIXELS = 120_000_000


def check_image(path: str | Path, field: str) -> None:
    """Raise ``ValueError`` naming ``field`` if ``path`` is missing, not a readable image, or
    larger than :data:`MAX_IMAGE_PIXELS`."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{field}: {str(path)!r} is a directory; expected an image file")
    if not path.is_file():
        raise ValueError(f"{field}: image file {str(path)!r} does not exist")
    with _open_image(path, field) as image:
        _decode(image, path, field)


@contextlib.contextmanager
def _open_image(path: Path, field: str, limit: int = MAX_IMAGE_PIXELS) -> Iterator[Image.Image]:
    """An image whose header is read and whose size is within ``limit`` pixels, not yet
    decoded; a FIFO or device is refused before it is opened."""
    if path.exists():
        check_regular(path, field)
    try:
        with warnings.catch_warnings():  # PIL's warning for what the cap below refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"{field}: {str(path)!r} is not a readable image (expected PNG, JPEG, ... of at most "
            f"{MAX_IMAGE_PIXELS} pixels): {error}"
        ) from None
    with image:
        if image.width * image.height > limit:
            raise ValueError(
                f"{field}: {str(path)!r} is {image.width}x{image.height} pixels; expected at most "
                f"{limit} pixels"
            )
        yield image


def _decode(image: Image.Image, path: Path, field: str) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"{field}: {str(path)!r} is not a readable image (expected PNG, JPEG, ...): {error}"
        ) from None


def load_image(
    path: str | Path, size: tuple[int, int] | None = None, field: str = "image"
) -> torch.Tensor:
    """An image file as (1, 3, H, W) in [0, 1], upright as a viewer shows it (a camera's EXIF
    orientation applied); resized (Lanczos) to ``size=(width, height)``."""
    with _open_image(Path(path), field) as image:
        _decode(image, Path(path), field)
        return image_tensor(ImageOps.exif_transpose(image), size)


def image_size(path: str | Path, field: str, limit: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """An image file's (width, height), read from its header."""
    with _open_image(Path(path), field, limit) as image:
        return image.size


def read_pixels(path: str | Path, field: str, limit: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file as (H, W, 3) uint8 (as :func:`to_rgb` converts it), at most ``limit``
    pixels, checked from the header before decoding."""
    with _open_image(Path(path), field, limit) as image:
        _decode(image, Path(path), field)
        return np.asarray(to_rgb(image))


# Modes that hold more than 8 bits a sample: PIL's convert("RGB") clips them at 255, so that a
# 16-bit greyscale PNG came out nearly white; they are scaled to 8 bits first.
_WIDE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def to_rgb(image: Image.Image) -> Image.Image:
    """A PIL image as 8-bit RGB, wide greyscale (16-bit PNGs, float TIFFs) scaled, not clipped."""
    if image.mode in _WIDE:
        values = np.asarray(image, dtype=np.float64) / _WIDE[image.mode]
        image = Image.fromarray(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8), "L")
    return image.convert("RGB")


def image_tensor(
    image: Image.Image | np.ndarray, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """A PIL image or (H, W, 3) uint8 array as (1, 3, H, W) in [0, 1]; resized (Lanczos) to
    ``size=(width, height)``."""
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else to_rgb(image)
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.LANCZOS)
    import torch

    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8, rounding to nearest."""
    import torch

    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()
