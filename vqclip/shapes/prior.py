"""The shapes world's image prior: read the scene an image shows, then draw it cleanly.

A small convolutional network names the shape's colour, the background's colour and the shape
class, and places the shape (centre and radius); the redrawing is the data set's own rendering
of that scene. Trained on corrupted renderings (:func:`vqclip.shapes.train.corrupt`: smooth warps
into blobs, noise, speckle), it reads the loop's blobs as the scene they are closest to, and its
redrawing has a clean outline (an autoencoder's redrawing is the average of the scenes a blob
might be, with rounded corners that read as a circle).
"""

from __future__ import annotations

import torch
from torch import nn

from vqclip.shapes.data import COLORS, PALETTE, SHAPES, SIZE, Scene, blend, shape_coverage

__all__ = ["ScenePrior", "scene_targets", "reading_accuracy"]

_NAMES = list(COLORS)
_WIDTHS = (3, 32, 64, 128, 128)  # channels from the image down to a 4x4 grid


class ScenePrior(nn.Module):
    """(B, 3, 64, 64) in [0, 1] -> (B, 3, size, size): the clean rendering of the scene it
    reads, drawn ``size`` pixels square, by default its own 64 (:func:`vqclip.models.prior.redraw`
    reads images of any size at 64x64 and asks for the redrawing at theirs)."""

    resolution = SIZE

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip(_WIDTHS, _WIDTHS[1:], strict=False):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.SiLU()]
        outputs = 2 * len(_NAMES) + len(SHAPES) + 3  # colour, background, shape, (cx, cy, r)
        self.encoder = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(_WIDTHS[-1] * 16, 256), nn.SiLU(), nn.Linear(256, outputs)
        )  # fmt: skip

    def heads(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits of colour (B, 6), background (B, 6), shape (B, 3); geometry (B, 3) in units
        of the image side."""
        out = self.encoder(image * 2 - 1)
        n = len(_NAMES)
        return out[:, :n], out[:, n : 2 * n], out[:, 2 * n : 2 * n + len(SHAPES)], out[:, -3:]

    @torch.no_grad()
    def read(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The scene each image shows, as tensors on its device: colour, background and shape
        indices (B,) (the background is never the shape's colour), and (cx, cy, r) (B, 3) in
        pixels of the 64x64 canvas."""
        color, background, shape, geometry = self.heads(image)
        color = color.argmax(1)
        background = background.scatter(1, color[:, None], -torch.inf).argmax(1)
        return color, background, shape.argmax(1), geometry * SIZE

    @torch.no_grad()
    def scenes(self, image: torch.Tensor) -> list[Scene]:
        """The scene each image shows, as :class:`Scene` objects."""
        color, background, shape, geometry = (t.tolist() for t in self.read(image))
        return [
            Scene(_NAMES[c], _NAMES[b], SHAPES[s], x, y, r)
            for c, b, s, (x, y, r) in zip(color, background, shape, geometry, strict=True)
        ]

    @torch.no_grad()
    def forward(self, image: torch.Tensor, size: int = SIZE) -> torch.Tensor:
        color, background, shape, geometry = self.read(image.float())
        masks = shape_coverage(geometry, size)  # (B, 3, size, size)
        covered = masks[torch.arange(len(masks), device=masks.device), shape][:, None]
        palette = PALETTE.to(image.device)
        drawn = blend(covered, palette[color, :, None, None], palette[background, :, None, None])
        return drawn.to(image.dtype)

    @torch.no_grad()
    def alternatives(self, image: torch.Tensor, size: int = SIZE) -> torch.Tensor:
        """(B, 3, 64, 64) -> (B, K, 3, size, size): the scenes one change away from the one it reads,
        redrawn at the place and size it reads: every shape class with either colour replaced by
        another, or with the two colours in swapped roles (K = 30, the reading among them).

        Its shape head is the least sure of its readings (a blob is often between shapes), and
        a blob can be in the wrong colour or its colours in the wrong roles; a caller that knows
        what the image should show (the loop, through CLIP) picks among these. All on the
        image's device, with no read back to the host.
        """
        color, background, _, geometry = self.read(image.float())
        pairs = _PAIRS.to(image.device)[color, background]  # (B, P, 2) colour indices
        palette = PALETTE.to(image.device)[..., None, None]  # (6, 3, 1, 1)
        inside, around = palette[pairs[..., :1]], palette[pairs[..., 1:]]  # (B, P, 1, 3, 1, 1)
        masks = shape_coverage(geometry, size)[:, None, :, None]  # (B, 1, 3, 1, S, S)
        return blend(masks, inside, around).flatten(1, 2).to(image.dtype)  # (B, P * 3, 3, S, S)


def _neighbours(color: str, background: str) -> list[tuple[str, str]]:
    """(colour, background) pairs one change away: either replaced, or the two swapped."""
    return [
        *((c, background) for c in _NAMES if c != background),
        *((color, b) for b in _NAMES if b not in (color, background)),
        (background, color),
    ]


# _neighbours as colour indices for every reading (colour, background): (6, 6, 10, 2); a
# reading never has both the same, and those rows are left at 0.
_PAIRS = torch.tensor([
    [[[_NAMES.index(a), _NAMES.index(b)] for a, b in _neighbours(c, bg)] if c != bg else [[0, 0]] * 10
     for bg in _NAMES]
    for c in _NAMES
])  # fmt: skip


def scene_targets(scenes: list[Scene]) -> tuple[torch.Tensor, ...]:
    """What :meth:`ScenePrior.heads` should say about ``scenes``: three class indices and the
    geometry."""
    return (
        torch.tensor([_NAMES.index(s.color) for s in scenes]),
        torch.tensor([_NAMES.index(s.background) for s in scenes]),
        torch.tensor([SHAPES.index(s.shape) for s in scenes]),
        torch.tensor([[s.cx / SIZE, s.cy / SIZE, s.radius / SIZE] for s in scenes]),
    )


def reading_accuracy(
    prior: ScenePrior, images: torch.Tensor, scenes: list[Scene]
) -> dict[str, float]:
    """The share of ``images`` whose colour, background and shape ``prior`` reads as ``scenes``
    (the scenes they show) has them."""
    read = prior.scenes(images)
    return {
        field: sum(
            getattr(a, field) == getattr(b, field) for a, b in zip(read, scenes, strict=True)
        )
        / len(scenes)
        for field in ("color", "background", "shape")
    }
