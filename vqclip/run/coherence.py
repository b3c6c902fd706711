"""Colour coherence: an animation's frames keep frame 0's colours (Deforum's ``color_coherence``).

A long animation drifts: each frame starts from the last one moved, and whatever the
optimisation or the sampler adds to the colours adds up, frame after frame (greys, then
saturated casts). With ``color_coherence`` each frame's start, once moved, has each channel's
histogram matched to frame 0's in a colour space ("rgb", "hsv" or "lab"): every value is sent
to the reference's value at the same quantile of its channel (the classic cumulative-histogram
match), so equal values stay equal (a flat colour stays flat) and the order of values is kept.
Frame 0 is read back from its PNG, so that a stopped animation resumes bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["match_colors", "ColorKeeper"]


def _spaces() -> dict[str, tuple[Callable, Callable]]:
    from kornia import color

    return {
        "rgb": (lambda x: x, lambda x: x),
        "hsv": (color.rgb_to_hsv, color.hsv_to_rgb),
        "lab": (color.rgb_to_lab, color.lab_to_rgb),
    }


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of the points (``xp``, ``fp``) at ``x`` (``xp`` increasing),
    held at the ends."""
    if len(xp) == 1:
        return fp.expand_as(x)
    i = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    out = y0 + ((x - x0) / (x1 - x0)).clamp(0, 1) * (y1 - y0)
    return torch.where(x <= xp[0], fp[0], out)


def _match_channel(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``source``'s values sent to ``reference``'s at the same cumulative share."""
    _, inverse, counts = torch.unique(source.flatten(), return_inverse=True, return_counts=True)  # fmt: skip
    ref_values, ref_counts = torch.unique(reference.flatten(), return_counts=True)
    shares = counts.cumsum(0).double() / source.numel()
    ref_shares = ref_counts.cumsum(0).double() / reference.numel()
    return _interp(shares, ref_shares, ref_values.double())[inverse].view_as(source).to(source.dtype)  # fmt: skip


@torch.no_grad()
def match_colors(image: torch.Tensor, reference: torch.Tensor, space: str) -> torch.Tensor:
    """``image`` (B, 3, H, W) in [0, 1] with each channel's histogram in ``space`` made that
    of the same image of ``reference`` (B, 3, H', W')."""
    to, back = _spaces()[space]
    x, ref = to(image.float()), to(reference.float().to(image.device))
    matched = torch.stack([
        torch.stack([_match_channel(a, b) for a, b in zip(xi, ri, strict=True)])
        for xi, ri in zip(x, ref, strict=True)
    ])  # fmt: skip
    return back(matched).clamp(0, 1).to(image.dtype)


class ColorKeeper:
    """A frame's start matched to frame 0's colours in ``space``; ``load()`` reads frame 0 back
    (from its PNG), once, when the first frame after it needs it."""

    def __init__(self, space: str, load: Callable[[], torch.Tensor]) -> None:
        self.space, self.load = space, load
        self.reference: torch.Tensor | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            self.reference = self.load()
        return match_colors(image, self.reference, self.space)
