"""A judge that uses no CLIP: from pixels alone, the background, the shape's colour and class.

Every pixel is classified to its nearest palette colour. The background is the colour that
covers most of the border, if it covers a fair share of the image; the shape's colour is the
largest other colour. The shape is read by fitting: the largest connected region of that
colour is compared with the data set's ideal disc, square and upright equilateral triangle of
the same area and centre (intersection over union), and the best is taken only when it fits
closely, the region is about as tall as wide, and it holds most of its colour (one object);
anything else is ``"other"``. The rule and its thresholds: docs/shapes.md.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vqclip.shapes.data import COLORS

__all__ = ["Judgement", "judge", "color_shares", "fit_shape"]

_PALETTE = np.array(list(COLORS.values()), dtype=np.float32)  # (C, 3)
_NAMES = list(COLORS)
_FAR = 90.0  # RGB distance beyond which a pixel matches no palette colour
FIT = 0.86  # least intersection over union with the ideal shape (clean renderings: >= 0.96)
ASPECT = 1.3  # most height:width, either way, of the region's box (the triangle's is 1.15),
# give or take a pixel: a small triangle's box on the pixel grid is 6 by 8
ONE_OBJECT = 0.8  # least share of its colour's pixels that the largest region holds
FAIR_SHARE = 0.3  # least share of the image the background covers (the data set's: >= 0.44)
MIN_SHARE = 30 / 64**2  # a region under this share of the image is no shape (30 pixels at 64x64)


@dataclass(frozen=True)
class Judgement:
    """What the judge sees in one image."""

    background: str | None  # None: no colour covers the border and a fair share
    color: str | None  # the shape's colour
    shape: str | None  # "circle", "square", "triangle", "other" (no close fit), None: no shape
    shares: dict[str, float]  # share of the image in each palette colour ("other": none)
    centre: tuple[float, float] | None = None  # (x, y) pixels: the shape's region's centroid

    def matches(self, color: str, shape: str, background: str) -> bool:
        """Whether the image shows ``color`` ``shape`` on ``background``, all three at once."""
        return (self.color, self.shape, self.background) == (color, shape, background)

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


def fit_shape(region: np.ndarray) -> tuple[str, dict[str, float]]:
    """The shape a boolean (H, W) region is, by fitting, and its intersection over union with
    each ideal shape of its area and centre; ``"other"`` when none fits closely or the region
    is too small or too elongated."""
    ys, xs = np.nonzero(region)
    if len(ys) < MIN_SHARE * region.size:
        return "other", {}
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    ious = {name: _iou(region, ideal) for name, ideal in _ideals(region.shape, ys, xs).items()}
    best = max(ious, key=ious.get)
    if max(height, width) - 1 > ASPECT * min(height, width) or ious[best] < FIT:
        return "other", ious
    return best, ious


def _ideals(size: tuple[int, ...], ys: np.ndarray, xs: np.ndarray) -> dict[str, np.ndarray]:
    """The data set's three shapes (data._inside) with the region's area and centroid, sampled
    at pixel centres: a disc, a square, an upright equilateral triangle (centroid at its
    circumcentre)."""
    area, cy, cx = len(ys), ys.mean() + 0.5, xs.mean() + 0.5
    y, x = np.mgrid[: size[0], : size[1]] + 0.5
    r = np.sqrt(area / np.pi)
    half = np.sqrt(area) / 2
    big = np.sqrt(4 * area / (3 * np.sqrt(3)))  # circumradius of the triangle of that area
    below = y - (cy - big)  # depth under the apex
    return {
        "circle": (x - cx) ** 2 + (y - cy) ** 2 <= r**2,
        "square": (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half),
        "triangle": (below >= 0) & (y <= cy + big / 2) & (np.abs(x - cx) <= below / np.sqrt(3)),
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def judge(pixels: np.ndarray) -> Judgement:
    """Judge one (H, W, 3) uint8 image."""
    labels = _labels(pixels)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    border = border[border >= 0]
    shares = color_shares(pixels)
    if len(border) == 0:
        return Judgement(None, None, None, shares)
    bg = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    background = _NAMES[bg] if shares[_NAMES[bg]] >= FAIR_SHARE else None
    counts = np.bincount(labels[labels >= 0], minlength=len(_NAMES))
    counts[bg] = 0
    if counts.max() == 0:
        return Judgement(background, None, None, shares)
    fg = int(counts.argmax())
    region = _largest_region(labels == fg)
    one_object = region.sum() >= ONE_OBJECT * counts[fg]
    shape = fit_shape(region)[0] if one_object else "other"
    ys, xs = np.nonzero(region)
    centre = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)
    return Judgement(background, _NAMES[fg], shape, shares, centre)
