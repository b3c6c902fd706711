"""Cutouts: random square crops of the image, all made in one batched resampling, and augments."""

from __future__ import annotations

import math
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "draw_places",
    "make_cutouts",
    "overview_cutouts",
    "greyscale",
    "make_augments",
    "augment",
    "shift_hue",
]


def draw_places(cutn: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """The random draws of ``cutn`` crops: (3, cutn) uniform in [0, 1), size, left and top, as
    fractions of their ranges (so that perceptors of any input size can share them)."""
    return torch.rand(3, cutn, generator=rng, device=device)


def make_cutouts(
    image: torch.Tensor,
    cut_size: int,
    cutn: int,
    cut_pow: float,
    rng: torch.Generator,
    method: str = "crops",
    places: torch.Tensor | None = None,
    smallest: int | None = None,
) -> torch.Tensor:
    """(B, 3, H, W) -> (B * cutn, 3, cut_size, cut_size), image-major.

    ``"crops"``: crops of random size and place, sizes ``rand ** cut_pow`` between
    ``min(H, W, cut_size)`` and ``min(H, W)`` as in the classic notebooks, all resampled at once
    by one affine grid. ``"pooling"``: ``cutn`` copies of the whole image pooled to
    ``cut_size`` (the mean of average and max pooling, as ``generate.py``'s default cut
    method), for the augments to vary; it draws nothing from ``rng``. ``places``: the
    crops' draws (:func:`draw_places`), made by the caller; None draws them here. ``smallest``
    replaces ``cut_size`` as the least crop side, so that perceptors of other input sizes can
    cut the same regions.
    """
    if method == "pooling":
        pooled = F.adaptive_avg_pool2d(image, cut_size) + F.adaptive_max_pool2d(image, cut_size)
        return (pooled / 2).repeat_interleave(cutn, 0)  # (B * cutn, 3, S, S)
    batch, _, height, width = image.shape
    device = image.device
    max_size, min_size = min(height, width), min(height, width, smallest or cut_size)
    uniform = draw_places(cutn, rng, device) if places is None else places  # (3, cutn)
    sizes = uniform[0].pow(cut_pow) * (max_size - min_size) + min_size  # (cutn,) in pixels
    left = uniform[1] * (width - sizes)
    top = uniform[2] * (height - sizes)
    theta = torch.zeros(cutn, 2, 3, device=device)  # output grid [-1, 1] -> input coordinates
    theta[:, 0, 0] = sizes / width
    theta[:, 1, 1] = sizes / height
    theta[:, 0, 2] = (2 * left + sizes) / width - 1
    theta[:, 1, 2] = (2 * top + sizes) / height - 1
    theta = theta.repeat(batch, 1, 1)  # (B * cutn, 2, 3): every image gets the same cuts
    grid = F.affine_grid(theta, [cutn * batch, 3, cut_size, cut_size], align_corners=False)
    images = image.repeat_interleave(cutn, 0)  # (B * cutn, 3, H, W), image-major
    return F.grid_sample(images, grid.to(image.dtype), mode="bilinear", align_corners=False)


def greyscale(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> the same, each pixel its luma in all three channels."""
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (images * weights).sum(-3, keepdim=True).expand_as(images)


def overview_cutouts(image: torch.Tensor, cut_size: int, count: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B * count, 3, cut_size, cut_size), image-major: the whole image,
    padded with black to a square and resized, as Disco Diffusion's overview cuts. Up to 4 are
    the image, its greyscale, its mirror and the mirror's greyscale (Disco's four); more are
    copies of the image, for the augments to vary."""
    height, width = image.shape[-2:]
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    square = F.pad(image, (left, side - width - left, top, side - height - top))
    view = F.interpolate(square, size=(cut_size, cut_size), mode="bilinear", antialias=True, align_corners=False)  # fmt: skip
    if count > 4:
        return view.repeat_interleave(count, 0)
    flipped = view.flip(-1)
    four = [view, greyscale(view), flipped, greyscale(flipped)][:count]
    return torch.stack(four, 1).flatten(0, 1)


def make_augments(names: tuple[str, ...], cut_size: int, fast: bool = True) -> nn.Module:
    """The classic notebooks' kornia augmentations, by their short names, in order: affine,
    perspective, colour jitter, erasing, flip, sharpness, resized crop, thin-plate spline,
    rotation, elastic, padded crop, Gaussian noise, Gaussian blur. ``fast`` runs the colour
    jitter's hue step by :func:`shift_hue` (the same function in half the time);
    ``fast=False`` is kornia's stock module, as the classic loop has it."""
    jitter = _FastColorJitter if fast else K.ColorJitter
    table = {
        "Af": lambda: K.RandomAffine(
            degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="border"
        ),
        "Pe": lambda: K.RandomPerspective(0.7, p=0.7),
        "Ji": lambda: jitter(0.1, 0.1, 0.1, 0.1, p=0.7),
        "Er": lambda: K.RandomErasing((0.1, 0.4), (0.3, 1 / 0.3), same_on_batch=True, p=0.7),
        "Hf": lambda: K.RandomHorizontalFlip(p=0.5),
        "Sh": lambda: K.RandomSharpness(0.3, p=0.5),
        "Re": lambda: K.RandomResizedCrop(
            (cut_size, cut_size), scale=(0.1, 1.0), cropping_mode="resample", p=0.5
        ),
        "Ts": lambda: K.RandomThinPlateSpline(scale=0.8, same_on_batch=True, p=0.7),
        "Ro": lambda: K.RandomRotation(15, p=0.7),
        "Et": lambda: K.RandomElasticTransform(p=0.7),
        "Cr": lambda: K.RandomCrop((cut_size, cut_size), padding=cut_size // 8, p=0.5),
        "Gn": lambda: K.RandomGaussianNoise(std=0.1, p=0.5),
        "Gb": lambda: K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=0.5),
    }
    return nn.Sequential(*(table[name]() for name in names))


def shift_hue(image: torch.Tensor, radians: torch.Tensor) -> torch.Tensor:
    """Rotate each image's HSV hue by its angle, keeping saturation and value: (B, 3, H, W) in
    [0, 1], (B,) -> (B, 3, H, W), as ``kornia.enhance.adjust_hue`` (torchvision's hue), without
    the round trip through HSV.

    The hue in sextants is 2 i + (c[i+1] - c[i+2]) / chroma for the largest channel i; each
    channel n of the result is ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (hue + (5, 3, 1)[n]) mod 6``.
    """
    high, top = image.max(-3, keepdim=True)  # (B, 1, H, W): value and its channel
    chroma = high - image.amin(-3, keepdim=True)
    ahead = image.roll(-1, -3) - image.roll(-2, -3)  # channel n: c[n+1] - c[n+2]
    sextants = ahead.gather(-3, top) / chroma.where(chroma > 0, 1) + 2 * top
    turn = radians.to(image.dtype).view(-1, 1, 1, 1) * (3 / math.pi)  # radians -> sextants
    offsets = torch.tensor((5.0, 3.0, 1.0), device=image.device, dtype=image.dtype)
    k = (sextants + turn + offsets.view(1, 3, 1, 1)) % 6  # (B, 3, H, W)
    return high - chroma * torch.minimum(k, 4 - k).clamp(0, 1)


class _FastColorJitter(K.ColorJitter):
    """kornia's ColorJitter (its parameters, order and probability) with :func:`shift_hue` for
    the hue step: kornia's HSV round trip took 0.21 of its 0.32 s on 32 cutouts of 224²,
    forward and backward."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hue_fn = shift_hue


def augment(
    cutouts: torch.Tensor,
    augments: nn.Module,
    noise: float,
    rng: torch.Generator,
    seed: int,
) -> torch.Tensor:
    """Apply ``augments`` (seeded by ``seed``) and per-cutout Gaussian noise (from ``rng``).

    kornia draws from torch's global generator, so it runs inside a forked RNG seeded with
    ``seed`` (the loop passes one derived from the run's seed and the iteration, a host-side
    integer, so there is no device sync); the caller's global RNG is left untouched.
    """
    if len(augments):
        devices = [cutouts.device] if cutouts.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            cutouts = augments(cutouts)
    if noise > 0:
        n = cutouts.shape[0]
        scale = torch.rand(n, 1, 1, 1, generator=rng, device=cutouts.device) * noise
        jitter = torch.randn(cutouts.shape, generator=rng, device=cutouts.device)
        cutouts = cutouts + scale * jitter.to(cutouts.dtype)
    return cutouts
