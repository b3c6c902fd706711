"""Upscaling finished images and frames: an ESRGAN-family model through spandrel, or Lanczos.

spandrel recognises an architecture from a state dict's keys and builds it (Real-ESRGAN's
RRDBNet and its relatives). vqclip reads the weights itself, weights-only
(:func:`vqclip.models.checkpoints.load_weights`), because spandrel's own file loader would run a
TorchScript file's code; and it builds the model once on the meta device first, so that a
crafted state dict cannot make it allocate more than the weights it holds. A model upscales by
its own factor; another factor is reached by resizing its output with Lanczos, as
Real-ESRGAN's ``--outscale`` does.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqclip.core.config import SCALES
from vqclip.core.images import image_tensor, load_image, to_uint8
from vqclip.core.limits import read_text
from vqclip.models.acquire import LANCZOS

__all__ = [
    "LANCZOS",
    "SCALES",
    "Upscaler",
    "load_upscaler",
    "upscale_file",
    "upscale_run",
    "upscaled_name",
    "check_upscale",
    "default_upscaler",
    "upscale_pixels",
]

MAX_OUTPUT_PIXELS = 64_000_000  # an 8000x8000 result; its float copy alone is 768 MB
MAX_PARAMETERS = 200_000_000  # the largest published upscalers hold ~40M
TILE = 256  # a model sees at most this many input pixels a side at once: bounded memory
TILE_PAD = 24  # and this much context around a tile, cut from its output: no seams
_FINAL = re.compile(r"^final(-\d+)?\.png$")


@dataclass(frozen=True)
class Upscaler:
    """A loaded upscaler: ``upscaler(image, scale)`` maps (B, 3, H, W) in [0, 1] to
    (B, 3, H*scale, W*scale)."""

    name: str
    scale: int  # the model's own factor; 0 for Lanczos, which has none
    model: Any = None  # a spandrel ImageModelDescriptor; None: Lanczos

    @torch.no_grad()
    def __call__(
        self, image: torch.Tensor, scale: int, tile: int = TILE, pad: int = TILE_PAD
    ) -> torch.Tensor:
        height, width = image.shape[-2:]
        check_upscale(width, height, scale)
        if scale == 1:
            return image
        if self.model is None:
            return _lanczos(image, scale)
        device = self.model.device
        out = torch.cat([_tiled(self.model, x[None].to(device), tile, pad) for x in image])
        out = out.clamp(0, 1).cpu()
        return out if self.scale == scale else _lanczos(out, scale / self.scale)


def check_upscale(width: int, height: int, scale: int) -> None:
    """Raise ``ValueError`` unless ``scale`` is a factor vqclip upscales by and the result of
    a ``width`` x ``height`` image stays within :data:`MAX_OUTPUT_PIXELS`."""
    if isinstance(scale, bool) or scale not in SCALES:
        raise ValueError(f"upscale: expected one of {list(SCALES)}, got {scale!r}")
    if width * height * scale * scale > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"upscale: {width}x{height} times {scale} would be {width * scale}x{height * scale}, "
            f"over {MAX_OUTPUT_PIXELS} pixels; expected a smaller image or factor"
        )


def _lanczos(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Each image resized by ``factor`` with PIL's Lanczos filter (through 8-bit pixels,
    which is what a saved PNG holds)."""
    height, width = image.shape[-2:]
    size = (round(width * factor), round(height * factor))
    return torch.cat([image_tensor(to_uint8(x), size) for x in image])


def _tiled(model: Any, image: torch.Tensor, tile: int, pad: int) -> torch.Tensor:
    """``model(image)`` for one (1, 3, H, W) image, tile by tile when it is larger than
    ``tile``: each tile is run with ``pad`` pixels of its surroundings, then cut back."""
    height, width = image.shape[-2:]
    if height <= tile and width <= tile:
        return model(image)
    s = model.scale
    out = image.new_zeros(1, image.shape[1], height * s, width * s)
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            top, left = max(y - pad, 0), max(x - pad, 0)
            bottom, right = min(y + tile, height), min(x + tile, width)
            piece = model(image[..., top : min(bottom + pad, height), left : min(right + pad, width)])  # fmt: skip
            out[..., y * s : bottom * s, x * s : right * s] = piece[
                ..., (y - top) * s : (bottom - top) * s, (x - left) * s : (right - left) * s
            ]
    return out


def load_upscaler(
    name_or_path: str, device: str | torch.device = "cpu", path: Path | None = None
) -> Upscaler:
    """``"lanczos"``, a registry name (``"RealESRGAN_x4plus"``, ``"shapes-upscaler"``) or a
    path to an upscaler's weights, ready to run on ``device``; ``path``: its file, already
    acquired (:func:`vqclip.models.acquire.acquire`)."""
    if name_or_path == LANCZOS:
        return Upscaler(LANCZOS, 0)
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError
    from spandrel import canonicalize_state_dict as canonical

    from vqclip.models.checkpoints import load_weights
    from vqclip.models.registry import resolve_upscaler

    path = path or resolve_upscaler(name_or_path)
    state = load_weights(path, "upscaler")
    tensors = [v for v in _leaves(state) if isinstance(v, torch.Tensor)]
    if sum(t.numel() for t in tensors) > MAX_PARAMETERS:
        raise ValueError(f"upscaler: {path} holds over {MAX_PARAMETERS} weights; refused")
    if not all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()):
        raise ValueError(f"upscaler: {path} holds weights that are NaN or infinite; expected a trained model's")  # fmt: skip
    try:
        with torch.device("meta"), warnings.catch_warnings():  # the keys' model, in no memory
            warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op"
            ModelLoader("meta").load_from_state_dict(canonical(dict(state)))
        descriptor = ModelLoader(device).load_from_state_dict(canonical(state))
    except UnsupportedModelError:
        raise ValueError(
            f"upscaler: {path} is no architecture spandrel knows; expected an ESRGAN-family "
            "super-resolution model (e.g. Real-ESRGAN's RealESRGAN_x4plus.pth)"
        ) from None
    except Exception as error:  # a state dict whose keys or shapes do not fit together
        text = str(error).strip().splitlines()
        raise ValueError(
            f"upscaler: cannot build a model from {path} ({text[0] if text else type(error).__name__})"
        ) from None
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "SR":
        raise ValueError(
            f"upscaler: {path} is a {descriptor.architecture.name} model for "
            f"{descriptor.purpose}, not for super-resolution"
        )
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise ValueError(f"upscaler: {path} is not an RGB model (expected 3 channels in and out)")
    return Upscaler(name_or_path, descriptor.scale, descriptor.eval())


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [leaf for value in node.values() for leaf in _leaves(value)]
    return [node]


def upscaled_name(path: Path, scale: int) -> Path:
    """Where the upscaled copy of ``path`` goes: ``final.png`` -> ``final_x4.png``."""
    return path.with_name(f"{path.stem}_x{scale}.png")


def upscale_file(
    source: str | Path, scale: int, upscaler: Upscaler, output: str | Path | None = None
) -> Path:
    """Write ``source`` upscaled ``scale`` times to ``output`` (default: beside it, ``_xN``),
    carrying the source's PNG text (a vqclip image's config) and what upscaled it; never
    overwrites."""
    from vqclip.run.frames import read_png_metadata, save_png

    source = Path(source)
    image = load_image(source, field="upscale")
    metadata: dict[str, Any] = {}
    if source.suffix.lower() == ".png":
        metadata.update(read_png_metadata(source))
    output = Path(output) if output else upscaled_name(source, scale)
    pixels = to_uint8(upscaler(image, scale)[0])
    done = {"scale": scale, "model": upscaler.name, "source": source.name}
    save_png(output, pixels, {**metadata, "upscale": json.dumps(done), "Software": "vqclip"})
    return output


def upscale_run(run_dir: str | Path, scale: int, upscaler: Upscaler) -> list[Path]:
    """A run's final image(s) upscaled beside them (``final_x4.png``, ``final-K_x4.png``)."""
    run_dir = Path(run_dir)
    finals = sorted(p for p in run_dir.glob("final*.png") if _FINAL.match(p.name))
    if not finals:
        raise ValueError(
            f"upscale: {run_dir} holds no final image; expected a finished run's directory "
            "(or give an image file)"
        )
    return [upscale_file(path, scale, upscaler) for path in finals]


def default_upscaler(path: str | Path) -> str:
    """The upscaler of the run that made ``path`` (a run directory or a PNG that vqclip wrote),
    as its preset names it; the default config's for any other image."""
    from vqclip.core import presets
    from vqclip.core.config import GenerationConfig
    from vqclip.run.frames import read_png_metadata

    path = Path(path)
    text = None
    try:
        if path.is_dir():
            text = read_text(path / "config.json", "upscale")
        elif path.suffix.lower() == ".png":
            text = read_png_metadata(path).get("config")
        config = GenerationConfig.from_json(text) if text else None
    except (OSError, ValueError, TypeError):  # no readable config: the default's
        config = None
    return presets.apply(config or GenerationConfig(prompts="an image")).upscaler


def upscale_pixels(image: np.ndarray, scale: int, upscaler: Upscaler) -> np.ndarray:
    """An (H, W, 3) uint8 frame upscaled, as one."""
    return to_uint8(upscaler(image_tensor(image), scale)[0])
