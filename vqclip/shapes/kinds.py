"""The shapes world through the plugin points: a palette term, a mirror transform and a depth
estimator, each registered by :func:`vqclip.shapes.plugin.register` as a third party's would be.

- ``shapes-palette``: the core's palette pull toward the data set's six colours; the renderings
  are flat, so the pull keeps gradients and blends away.
- ``shapes-mirror``: the core's horizontal symmetry; every shape of the data set is symmetric
  about its vertical axis.
- ``shapes-depth``: a shape stands in front of its background: the pixels unlike the border's
  colour at distance 1, the rest at 2.
"""

from __future__ import annotations

from typing import Any

import torch

from vqclip.core.config import GenerationConfig
from vqclip.loop.composition import PaletteTerm, symmetric
from vqclip.loop.objective import Term
from vqclip.shapes.data import PALETTE

__all__ = ["make_palette_term", "make_mirror", "load_depth", "FOREGROUND"]

FOREGROUND = 0.25  # RGB distance from the border's colour beyond which a pixel is the shape


def make_palette_term(weight: float, config: GenerationConfig, device: torch.device) -> Term:
    return PaletteTerm("shapes-palette", weight, colors=PALETTE.to(device))


def make_mirror(arg: str, config: GenerationConfig) -> Any:
    if arg:
        raise ValueError(f"transforms: shapes-mirror takes no argument, got {arg!r}")
    return symmetric("horizontal")


def load_depth(device: torch.device | str = "cpu") -> Any:
    @torch.no_grad()
    def depth(image: torch.Tensor) -> torch.Tensor:
        border = torch.cat(
            [image[..., 0, :], image[..., -1, :], image[..., :, 0], image[..., :, -1]], -1
        )  # (B, 3, 2H + 2W)
        background = border.median(-1).values[..., None, None]  # (B, 3, 1, 1)
        shape = (image - background).norm(dim=1, keepdim=True) > FOREGROUND
        return torch.where(shape, 1.0, 2.0).to(image.dtype)

    return depth
