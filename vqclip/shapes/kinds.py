"""The shapes world through the plugin points: a palette term, a mirror transform and a depth
estimator, each registered by :func:`vqclip.shapes.plugin.register` as a third party's would be.

- ``shapes-palette``: each pixel's squared distance to the nearest of the data set's six
  colours; the renderings are flat, so the pull keeps gradients and blends away.
- ``shapes-mirror``: the left half mirrored onto the right; every shape of the data set is
  symmetric about its vertical axis.
- ``shapes-depth``: a shape stands in front of its background: the pixels unlike the border's
  colour at distance 1, the rest at 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vqclip.core.config import GenerationConfig
from vqclip.loop.objective import Loss, Term, View
from vqclip.shapes.data import PALETTE

__all__ = ["PaletteTerm", "make_palette_term", "make_mirror", "load_depth", "FOREGROUND"]

FOREGROUND = 0.25  # RGB distance from the border's colour beyond which a pixel is the shape


def palette_distances(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H, W): each pixel's squared distance to its nearest palette colour."""
    palette = PALETTE.to(image.device, image.dtype)
    pixels = image.permute(0, 2, 3, 1).unsqueeze(-2)  # (B, H, W, 1, 3)
    return (pixels - palette).pow(2).sum(-1).min(-1).values


@dataclass(frozen=True)
class PaletteTerm(Term):
    """The mean of :func:`palette_distances` per image, summed over the batch, weighted."""

    name: str = "shapes-palette"

    def __call__(self, view: View) -> Loss:
        loss = palette_distances(view.image).mean((1, 2)).sum()
        return Loss(loss * self.weight_at(view.iteration))


def make_palette_term(weight: float, config: GenerationConfig, device: torch.device) -> Term:
    return PaletteTerm("shapes-palette", weight)


def make_mirror(arg: str, config: GenerationConfig) -> Any:
    if arg:
        raise ValueError(f"transforms: shapes-mirror takes no argument, got {arg!r}")

    def mirror(image: torch.Tensor, iteration: int) -> torch.Tensor:
        half = image.shape[-1] // 2  # an odd width keeps its middle column
        return torch.cat([image[..., : image.shape[-1] - half], image[..., :half].flip(-1)], -1)

    return mirror


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
