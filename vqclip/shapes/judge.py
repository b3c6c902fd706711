"""A judge that uses no CLIP: from pixels alone, the background, the shape's colour and class.

Every pixel is classified to its nearest palette colour. The background is the colour that
covers most of the border; the shape's colour is the largest other colour; the shape class
comes from the largest connected region of that colour: how much of its bounding box it fills
(square ~1.0, circle ~0.79, triangle ~0.5) and how its width grows from top to bottom.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vqclip.shapes.data import COLORS

__all__ = ["Judgement", "judge", "color_shares"]

_PALETTE = np.array(list(COLORS.values()), dtype=np.float32)  # (C, 3)
_NAMES = list(COLORS)
_FAR = 90.0  # RGB distance beyond which a pixel matches no palette colour


@dataclass(frozen=True)
class Judgement:
    """What the judge sees in one image."""

    background: str | None
    color: str | None  # the shape's colour
    shape: str | None  # "circle", "square", "triangle", or None when no clean region
    shares: dict[str, float]  # share of the image in each palette colour ("other": none)

    def top_two(self) -> set[str]:
        """The two colours that cover most of the image."""
        ranked = sorted((c for c in self.shares if c != "other"), key=self.shares.get, reverse=True)
        return set(ranked[:2])


def _labels(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) palette index, -1 where no colour is near."""
    rgb = pixels.astype(np.float32)[..., None, :]  # (H, W, 1, 3)
    distance = np.linalg.norm(rgb - _PALETTE, axis=-1)  # (H, W, C)
    labels = distance.argmin(-1)
    labels[distance.min(-1) > _FAR] = -1
    return labels


def color_shares(pixels: np.ndarray) -> dict[str, float]:
    """Share of the image nearest to each palette colour (and "other")."""
    labels = _labels(pixels)
    shares = {name: float((labels == i).mean()) for i, name in enumerate(_NAMES)}
    shares["other"] = float((labels == -1).mean())
    return shares


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask."""
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        region, queue = [], deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best, strict=True)
        out[list(ys), list(xs)] = True
    return out


def _classify_shape(region: np.ndarray) -> str | None:
    ys, xs = np.nonzero(region)
    if len(ys) < 30:
        return None
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    box_h, box_w = bottom - top + 1, right - left + 1
    if max(box_h, box_w) > 1.6 * min(box_h, box_w):
        return None  # too elongated to be any of the three
    fill = len(ys) / (box_h * box_w)
    band = max(1, box_h // 4)
    top_width = region[top : top + band].sum() / band
    bottom_width = region[bottom - band + 1 : bottom + 1].sum() / band
    if top_width < 0.55 * bottom_width and fill < 0.7:
        return "triangle"
    if fill >= 0.88:
        return "square"
    if 0.68 <= fill < 0.88 and top_width > 0.45 * bottom_width:
        return "circle"
    return None


def judge(pixels: np.ndarray) -> Judgement:
    """Judge one (H, W, 3) uint8 image."""
    labels = _labels(pixels)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    border = border[border >= 0]
    shares = color_shares(pixels)
    if len(border) == 0:
        return Judgement(None, None, None, shares)
    bg = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    counts = np.bincount(labels[labels >= 0], minlength=len(_NAMES))
    counts[bg] = 0
    if counts.max() == 0:
        return Judgement(_NAMES[bg], None, None, shares)
    fg = int(counts.argmax())
    shape = _classify_shape(_largest_region(labels == fg))
    return Judgement(_NAMES[bg], _NAMES[fg], shape, shares)
