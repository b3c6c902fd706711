"""Reading user images (init, target and image prompts) as tensors, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["check_image", "load_image", "image_tensor", "to_uint8"]


def check_image(path: str | Path, field: str) -> None:
    """Raise ``ValueError`` naming ``field`` if ``path`` is missing or not a readable image."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{field}: {str(path)!r} is a directory; expected an image file")
    if not path.is_file():
        raise ValueError(f"{field}: image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(
            f"{field}: {str(path)!r} is not a readable image (expected PNG, JPEG, ...): {error}"
        ) from None


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An image file as (1, 3, H, W) in [0, 1], upright as a viewer shows it (a camera's EXIF
    orientation applied); resized (Lanczos) to ``size=(width, height)``."""
    with Image.open(path) as image:
        return image_tensor(ImageOps.exif_transpose(image), size)


def image_tensor(
    image: Image.Image | np.ndarray, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """A PIL image or (H, W, 3) uint8 array as (1, 3, H, W) in [0, 1]; resized (Lanczos) to
    ``size=(width, height)``."""
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8, rounding to nearest."""
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()
