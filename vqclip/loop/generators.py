"""Generators: what the loop optimises, and how it becomes pixels.

A generator's parameters are a (B, C, h, w) tensor, ``factor`` image pixels per cell each way;
the loop optimises them as a pyramid of levels (:func:`compose_latent`) and keeps the
composed tensor in range after every step (``clamp``). Two ship with vqclip:

- ``vqgan``: a VQGAN latent, quantised straight-through to its codebook and decoded (the classic
  notebooks' loop);
- ``pixels``: the RGB image itself (pixray's pixel drawer, pytti's RGB mode), optionally
  ``pixel_scale`` times coarser and upsampled to blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.loop.latents import clamp_with_grad, decode_latent, encode_image, random_latent

__all__ = [
    "Generator",
    "VQGANGenerator",
    "wrapped_padding",
    "PixelGenerator",
    "compose_latent",
    "clamp_levels",
]


class Generator(Protocol):
    """What the loop needs of a generator."""

    name: str
    factor: int  # image pixels per parameter cell, each way

    def random(self, batch: int, height: int, width: int, rng: torch.Generator) -> torch.Tensor:
        """Random parameters for ``batch`` images of ``height`` x ``width`` pixels."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the parameters that render them (no gradient)."""
        ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Parameters -> (B, 3, H, W) in [0, 1], differentiable; runs under the loop's autocast."""
        ...

    def clamp(self, levels: list[torch.Tensor]) -> None:
        """Keep the composed parameters in range, in place (after each optimiser step)."""
        ...


@contextmanager
def wrapped_padding(model: nn.Module) -> Iterator[None]:
    """Every padded convolution of ``model`` pads circularly while inside: the edges see the
    opposite edges, so a decoded image is periodic (a seamless tile). The model, shared by the
    model cache, is put back as it was."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and any(m.padding)]
    modes = [conv.padding_mode for conv in convs]
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(convs, modes, strict=True):
            conv.padding_mode = mode


class VQGANGenerator:
    """A VQGAN latent: random codes or an encoded image, decoded through the codebook."""

    name = "vqgan"

    def __init__(self, vqgan: nn.Module, circular: bool = False) -> None:
        self.vqgan, self.circular = vqgan, circular
        self.factor = vqgan.spec.factor

    def random(self, batch: int, height: int, width: int, rng: torch.Generator) -> torch.Tensor:
        f = self.factor
        return random_latent(self.vqgan.codebook, batch, height // f, width // f, rng)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.vqgan, images)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if not self.circular:
            return decode_latent(self.vqgan, latent)
        with wrapped_padding(self.vqgan):  # a seamless tile: the decoder works on the torus
            return decode_latent(self.vqgan, latent)

    @torch.no_grad()
    def clamp(self, levels: list[torch.Tensor]) -> None:
        codebook = self.vqgan.codebook  # (n_embed, D): each channel within the codes' range
        clamp_levels(levels, codebook.min(0).values, codebook.max(0).values)


class PixelGenerator:
    """The image's RGB values, ``scale`` times coarser than the image (1: every pixel)."""

    name = "pixels"

    def __init__(self, scale: int = 1) -> None:
        self.factor = scale

    def random(self, batch: int, height: int, width: int, rng: torch.Generator) -> torch.Tensor:
        shape = (batch, 3, height // self.factor, width // self.factor)
        return torch.rand(shape, generator=rng, device=rng.device)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return images.float().clone()
        return F.avg_pool2d(images.float(), self.factor)  # each block's mean colour

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        pixels = clamp_with_grad(latent.float(), 0.0, 1.0)
        if self.factor == 1:
            return pixels
        return F.interpolate(pixels, scale_factor=self.factor, mode="nearest")  # blocks

    @torch.no_grad()
    def clamp(self, levels: list[torch.Tensor]) -> None:
        ones = levels[-1].new_ones(3)
        clamp_levels(levels, ones * 0, ones)


def compose_latent(levels: list[torch.Tensor]) -> torch.Tensor:
    """The finest level plus every coarser one, bilinearly upsampled to its size."""
    *coarse, latent = levels
    for level in coarse:
        up = F.interpolate(level, latent.shape[-2:], mode="bilinear", align_corners=False)
        latent = latent + up
    return latent


@torch.no_grad()
def clamp_levels(levels: list[torch.Tensor], low: torch.Tensor, high: torch.Tensor) -> None:
    """Keep the composed pyramid within [low, high] per channel ((C,) each), by moving the
    finest level: the coarse ones keep their shared shifts."""
    low, high = low.view(1, -1, 1, 1), high.view(1, -1, 1, 1)
    fine = levels[-1]
    if len(levels) == 1:
        fine.copy_(fine.maximum(low).minimum(high))
        return
    coarse = compose_latent([*levels[:-1], torch.zeros_like(fine)])
    fine.copy_((fine + coarse).maximum(low).minimum(high) - coarse)
