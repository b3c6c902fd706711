"""Composition: symmetry and seamless tiles as image transforms, a palette, saturation and
contrast as objective terms.

- ``symmetry``: the rendered image made symmetric before it is cut and shown ("horizontal":
  the left half mirrored onto the right, as Disco Diffusion's ``use_horizontal_symmetry``;
  "vertical": the top half onto the bottom; "both").
- ``tile``: the image rolled on a torus before it is cut (a different roll each step, from the
  seed and the step: no draw from the run's rng), so that every cutout may span the wrap and
  the optimisation makes the edges meet, as pixray's tiler; what is shown is not rolled.
- ``palette``: each pixel's squared distance to its nearest palette colour.
- ``saturation_weight``, ``contrast_weight``: pulls toward saturated colour and spread
  brightness.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vqclip.loop.objective import Loss, Term, View

__all__ = [
    "symmetric", "Tile", "palette_distances", "PaletteTerm", "SaturationTerm",
    "ContrastTerm",
]  # fmt: skip


def _mirror(image: torch.Tensor, dim: int) -> torch.Tensor:
    """The first half along ``dim`` mirrored onto the second (an odd size keeps its middle)."""
    size = image.shape[dim]
    half = size // 2
    first = image.narrow(dim, 0, size - half)
    return torch.cat([first, image.narrow(dim, 0, half).flip(dim)], dim)


def _turned_twice(image: torch.Tensor) -> torch.Tensor:
    """The top half, and below it the same turned half a turn: the image is its own 180°
    rotation (an even height; an odd one keeps its middle row as it is)."""
    size = image.shape[-2]
    half = size // 2
    top = image.narrow(-2, 0, size - half)
    return torch.cat([top, image.narrow(-2, 0, half).flip(-2).flip(-1)], -2)


def _turned_four_times(image: torch.Tensor) -> torch.Tensor:
    """The top-left quarter, turned a quarter turn into each other corner: the image is its
    own 90° rotation (a square image of even side)."""
    half = image.shape[-1] // 2
    quarter = image[..., :half, :half]
    top = torch.cat([quarter, torch.rot90(quarter, -1, (-2, -1))], -1)
    bottom = torch.cat([torch.rot90(quarter, 1, (-2, -1)), torch.rot90(quarter, 2, (-2, -1))], -1)
    return torch.cat([top, bottom], -2)


def _glided(image: torch.Tensor) -> torch.Tensor:
    """The left half, and beside it the same turned upside down: shifted half its width and
    reflected top to bottom, the image is itself (a glide reflection; an even width). Tiled,
    the texture has the wallpaper group pg."""
    half = image.shape[-1] // 2
    left = image[..., :half]
    return torch.cat([left, left.flip(-2)], -1)


def _kaleidoscope(image: torch.Tensor) -> torch.Tensor:
    """The top-left quarter made its own mirror image along its diagonal, then mirrored onto
    the other three: the image is its own mirror image across both axes and both diagonals
    (eight ways; a square image of even side). Tiled, the texture has the wallpaper group p4m."""
    half = image.shape[-1] // 2
    quarter = image[..., :half, :half]
    below = torch.ones(half, half, dtype=torch.bool, device=image.device).tril()
    quarter = torch.where(below, quarter, quarter.transpose(-2, -1))
    top = torch.cat([quarter, quarter.flip(-1)], -1)
    return torch.cat([top, top.flip(-2)], -2)


def _half_turn(image: torch.Tensor) -> torch.Tensor:
    return image.flip(-2).flip(-1)


def _shifted(image: torch.Tensor, x: bool = True, y: bool = False) -> torch.Tensor:
    """``image`` rolled half its width (``x``) and/or half its height (``y``) on the torus."""
    dims = [d for d, on in ((-1, x), (-2, y)) if on]
    return image.roll([image.shape[d] // 2 for d in dims], dims)


def _same(image: torch.Tensor) -> torch.Tensor:
    return image


def _mirrored(image: torch.Tensor) -> torch.Tensor:
    return image.flip(-1)


def _centred(maps: tuple) -> tuple:
    """A group's maps, and each again shifted half the cell both ways (a centred cell)."""
    return (*maps, *(lambda x, g=g: _shifted(g(x), y=True) for g in maps))


# Wallpaper groups whose cell is the whole image (a tile; even sides, p4g's square), each as
# the maps of the image onto itself that the group holds; the image made symmetric is their
# mean (the projection onto the images they leave unchanged). Mirrors and glides are the
# flips and half-rolls of the pixel torus.
_GROUPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "cm": _centred((_same, _mirrored)),  # a mirror, in a centred cell
    # pmg: mirrors across x; glides along x (a half-roll and a flip of y) at right angles
    "pmg": (_same, _mirrored, lambda x: _shifted(x.flip(-2)), lambda x: _shifted(_half_turn(x))),
    # pgg: glides both ways, half-turns where their axes do not meet
    "pgg": (_same, _half_turn, lambda x: _shifted(x.flip(-2), y=True), lambda x: _shifted(x.flip(-1), y=True)),
    "cmm": _centred((_same, _mirrored, lambda x: x.flip(-2), _half_turn)),  # pmm, centred
    # p4g: quarter-turns, and mirrors on the diagonals shifted half the cell both ways
    "p4g": tuple(
        lambda x, k=k, d=d: torch.rot90(_shifted(x.transpose(-2, -1), y=True) if d else x, k, (-2, -1))
        for d in (False, True)
        for k in range(4)
    ),
}  # fmt: skip


def _wallpaper(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    maps = _GROUPS[kind]
    return lambda image: torch.stack([g(image) for g in maps]).mean(0)


# The hexagonal groups' turns and mirrors about a lattice point, as integer matrices acting on
# lattice coordinates (columns: the images of the lattice vectors a1, a2 at 60° to each other).
# Integer matrices of determinant ±1 map the lattice onto itself, so each is exactly a map of
# the tile onto itself whatever the sides' ratio: the texture stays seamless, and a ratio a
# little off √3 (sides in steps of 16 pixels) only shears the turns a little.
_TURN = ((0, -1), (1, 1))  # 60°: a1 -> a2, a2 -> a2 - a1
_ALONG = ((1, 1), (0, -1))  # the mirror along a1 (a2 -> a1 - a2): p31m's
_ACROSS = ((-1, -1), (0, 1))  # across a1 (a1 -> -a1): p3m1's, through every 3-fold centre
# Each group: the turns in steps of 60° x step, and the mirror after each, if any.
HEXAGONAL = {"p3": (2, None), "p6": (1, None), "p31m": (2, _ALONG), "p3m1": (2, _ACROSS), "p6m": (1, _ALONG)}  # fmt: skip


def _hex_maps(kind: str) -> list[torch.Tensor]:
    """The point group of ``kind``: its turns, and each again after its mirror if it has one."""
    step, mirror = HEXAGONAL[kind]
    turn = torch.tensor(_TURN, dtype=torch.float64)
    turns = [torch.linalg.matrix_power(turn, k) for k in range(0, 6, step)]
    if mirror is None:
        return turns
    return turns + [torch.tensor(mirror, dtype=torch.float64) @ t for t in turns]


@functools.lru_cache(maxsize=16)
def _hex_sampling(kind: str, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each map of ``kind``'s point group (about the pixel (0, 0)), where each pixel reads
    the image on the torus: the four neighbours' flat indices and their bilinear weights,
    (maps, 4, H*W) each. The short side holds a1; a2 reaches the image's centre."""
    a1 = (width, 0.0) if width <= height else (0.0, height)
    basis = torch.tensor([a1, (width / 2, height / 2)], dtype=torch.float64).T  # columns a1, a2
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")  # fmt: skip
    points = torch.stack([xs.flatten(), ys.flatten()])  # (2, H*W): x, y
    indices, weights = [], []
    for lattice_map in _hex_maps(kind):
        x, y = basis @ lattice_map @ torch.linalg.inv(basis) @ points
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        corners = [(0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)]  # fmt: skip
        indices.append(torch.stack([((y0 + dy) % height) * width + (x0 + dx) % width for dx, dy, _ in corners]))  # fmt: skip
        weights.append(torch.stack([w for _, _, w in corners]))
    return torch.stack(indices).long(), torch.stack(weights).float()


def _hexagonal(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image made the mean of its images under ``kind``'s group: first under the lattice's
    translation to its centre (a half-roll both ways: then the hexagonal lattice's turns are
    maps of the image), then under the point group, each map resampled bilinearly."""

    def made(image: torch.Tensor) -> torch.Tensor:
        image = (image + _shifted(image, y=True)) / 2
        height, width = image.shape[-2:]
        indices, weights = _hex_sampling(kind, height, width)
        flat = image.flatten(-2)  # (..., H*W)
        picked = flat[..., indices.to(image.device)]  # (..., maps, 4, H*W)
        mean = (picked * weights.to(image.device, image.dtype)).sum(-2).mean(-2)
        return mean.unflatten(-1, (height, width))

    return made


def symmetric(kind: str, when: Callable[[int], bool] | None = None) -> Callable[[torch.Tensor, int], torch.Tensor]:  # fmt: skip
    """The transform ``(image, iteration) -> image`` of a ``symmetry`` setting, applied at the
    steps ``when`` holds for (None: every step; Disco's ``transformation_percent`` ends it
    part-way, or names single steps)."""
    turns = {"rotate2": _turned_twice, "rotate4": _turned_four_times, "glide": _glided,
             "kaleidoscope": _kaleidoscope, **{k: _wallpaper(k) for k in _GROUPS},
             **{k: _hexagonal(k) for k in HEXAGONAL}}  # fmt: skip
    if kind in turns:
        turn = turns[kind]
    else:
        dims = {"horizontal": (-1,), "vertical": (-2,), "both": (-1, -2)}[kind]

        def turn(image: torch.Tensor) -> torch.Tensor:
            for dim in dims:
                image = _mirror(image, dim)
            return image

    def transform(image: torch.Tensor, iteration: int) -> torch.Tensor:
        return turn(image) if when is None or when(iteration) else image

    return transform


@dataclass(frozen=True)
class Tile:
    """A roll of the image on the torus, by an offset of the seed and the step; applied to
    what is cut (``view_only``), never to what is shown."""

    seed: int
    view_only: bool = True

    def __call__(self, image: torch.Tensor, iteration: int) -> torch.Tensor:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + iteration) % 2**63)
        dy = int(torch.randint(image.shape[-2], (1,), generator=g))
        dx = int(torch.randint(image.shape[-1], (1,), generator=g))
        return image.roll((dy, dx), (-2, -1))


def palette_distances(image: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) and (C, 3) colours in [0, 1] -> (B, H, W): each pixel's squared distance to
    its nearest palette colour."""
    pixels = image.permute(0, 2, 3, 1).unsqueeze(-2)  # (B, H, W, 1, 3)
    return (pixels - palette.to(image.device, image.dtype)).pow(2).sum(-1).min(-1).values


@dataclass(frozen=True)
class PaletteTerm(Term):
    """The mean of :func:`palette_distances` per image, summed over the batch."""

    name: str = "palette"
    colors: torch.Tensor | None = None  # (C, 3) in [0, 1]

    def __call__(self, view: View) -> Loss:
        loss = palette_distances(view.image, self.colors).mean((1, 2)).sum()
        return Loss(loss * self.weight_at(view.iteration))


@dataclass(frozen=True)
class SaturationTerm(Term):
    """One less the mean saturation ((max - min) / max of the channels) per image, summed."""

    name: str = "saturation"

    def __call__(self, view: View) -> Loss:
        high, low = view.image.amax(1), view.image.amin(1)
        saturation = (high - low) / high.clamp_min(1e-3)
        return Loss((1 - saturation).mean((1, 2)).sum() * self.weight_at(view.iteration))


@dataclass(frozen=True)
class ContrastTerm(Term):
    """How far the brightness's spread (its standard deviation) falls short of 0.25, per image,
    summed: flat, grey images are pulled apart, contrasty ones left alone."""

    name: str = "contrast"

    def __call__(self, view: View) -> Loss:
        weights = torch.tensor([0.299, 0.587, 0.114], device=view.image.device)
        brightness = torch.einsum("bchw,c->bhw", view.image, weights.to(view.image.dtype))
        spread = brightness.flatten(1).std(1)
        return Loss((0.25 - spread).clamp_min(0).sum() * self.weight_at(view.iteration))
