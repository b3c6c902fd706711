"""An image prior: a small autoencoder that redraws an image as the nearest image it knows.

The loop can pull each generated image toward its redrawing, ``prior_weight * MSE(image,
prior(image))`` with the redrawing held fixed. CLIP decides what the image shows; the prior only
keeps it near images of the kind the prior was trained on. The shapes world ships one
(``shapes-prior``, trained by ``python -m vqclip.shapes.train prior`` to turn warped, noisy and
speckled renderings back into clean ones), which turns the loop's blobs into shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.models import load_checkpoint

__all__ = ["Autoencoder", "load_prior", "save_prior", "prior_loss"]

_WIDTHS = (3, 32, 64, 128, 128)  # channels from the image down to the 4x4 bottleneck grid


class Autoencoder(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 3, S, S): four stride-2 convolutions down to a 4x4 grid, one
    global code of ``code_dim`` numbers, and back up. S is 64 (16 times the grid)."""

    def __init__(self, code_dim: int = 64, resolution: int = 64) -> None:
        super().__init__()
        if resolution != 64:  # four halvings down to the 4x4 grid
            raise ValueError(f"Autoencoder: resolution must be 64, got {resolution}")
        self.code_dim, self.resolution = code_dim, resolution
        down: list[nn.Module] = []
        for a, b in zip(_WIDTHS, _WIDTHS[1:], strict=False):
            down += [nn.Conv2d(a, b, 4, 2, 1), nn.SiLU()]
        grid = _WIDTHS[-1] * 16
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(grid, code_dim))
        self.expand = nn.Linear(code_dim, grid)
        up: list[nn.Module] = []
        widths = _WIDTHS[::-1]
        for a, b in zip(widths, widths[1:], strict=False):
            up += [nn.SiLU(), nn.ConvTranspose2d(a, b, 4, 2, 1)]
        self.decoder = nn.Sequential(*up)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        code = self.encoder(image * 2 - 1)  # (B, code_dim)
        grid = self.expand(code).view(-1, _WIDTHS[-1], 4, 4)
        return torch.sigmoid(self.decoder(grid))


def save_prior(model: Autoencoder, path: str | Path) -> None:
    """Save the weights (fp16) and the constructor's arguments: plain tensors and numbers."""
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save(
        {"code_dim": model.code_dim, "resolution": model.resolution, "state_dict": state}, path
    )


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> Autoencoder:
    """Load a prior saved by :func:`save_prior`, safely and strictly, fp32, eval mode, frozen."""
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or not {"code_dim", "resolution", "state_dict"} <= set(saved):
        raise ValueError(
            f"prior file {path}: expected a dict with 'code_dim', 'resolution' and 'state_dict' "
            "(as vqclip.prior.save_prior writes)"
        )
    model = Autoencoder(int(saved["code_dim"]), int(saved["resolution"]))
    state = {k: v.float() for k, v in saved["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"prior file {path} does not match its architecture: {error}") from None
    return model.eval().requires_grad_(False).to(device)


def prior_loss(image: torch.Tensor, prior: Autoencoder, weight: float) -> torch.Tensor:
    """``weight * MSE(image, prior(image))`` per image, the redrawing held fixed, so the pull
    moves the image toward it (times the batch size: each image's pull does not shrink)."""
    if image.shape[-2:] != (prior.resolution, prior.resolution):
        raise ValueError(
            f"prior: works on {prior.resolution}x{prior.resolution} images, got "
            f"{image.shape[-1]}x{image.shape[-2]}"
        )
    image = image.float()
    with torch.no_grad():
        redrawn = prior(image)
    return F.mse_loss(image, redrawn) * (weight * image.shape[0])
