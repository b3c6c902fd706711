"""A procedural, seeded data set: one coloured shape on a plain background, with captions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "COLORS",
    "SHAPES",
    "Scene",
    "sample_scenes",
    "render",
    "rgb",
    "coverage",
    "shape_coverage",
    "PALETTE",
    "blend",
    "draw_shape",
    "caption",
    "canonical_caption",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
PALETTE = torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255  # (6, 3) in [0, 1]
SHAPES = ("circle", "square", "triangle")
SIZE = 64  # image side in pixels
_SYNONYMS = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box", "square shape"),
    "triangle": ("triangle", "triangular shape", "triangle shape"),
}
_TEMPLATES = (
    "a {c} {s} on a {b} background",
    "a {b} background with a {c} {s}",
    "{c} {s}, {b} backdrop",
    "a picture of a {c} {s} over {b}",
    "a {s} in {c} on {b}",
    "{b} background, {c} {s}",
)
_SUPERSAMPLE = 4  # render at 4x and average down: anti-aliased edges


@dataclass(frozen=True)
class Scene:
    """One image's content: colours by name, shape class, centre and radius in pixels."""

    color: str
    background: str
    shape: str
    cx: float
    cy: float
    radius: float


def canonical_caption(color: str, shape: str, background: str) -> str:
    """The one caption form used for zero-shot evaluation and the demo."""
    return _TEMPLATES[0].format(c=color, s=shape, b=background)


def caption(scene: Scene, rng: torch.Generator) -> str:
    """A caption from a random template and synonym."""
    t, s = (
        torch.randint(len(_TEMPLATES), (1,), generator=rng).item(),
        torch.randint(3, (1,), generator=rng).item(),
    )
    return _TEMPLATES[t].format(c=scene.color, s=_SYNONYMS[scene.shape][s], b=scene.background)


def sample_scenes(count: int, rng: torch.Generator) -> list[Scene]:
    """``count`` random scenes; the shape's colour always differs from the background's."""
    names = list(COLORS)
    scenes = []
    for _ in range(count):
        u = torch.rand(6, generator=rng).tolist()
        color = names[int(u[0] * len(names))]
        others = [n for n in names if n != color]
        background = others[int(u[1] * len(others))]
        shape = SHAPES[int(u[2] * len(SHAPES))]
        radius = 10 + u[3] * 14  # 10..24 px: the shape covers 8%..56% of the image
        cx = radius + u[4] * (SIZE - 2 * radius)
        cy = radius + u[5] * (SIZE - 2 * radius)
        scenes.append(Scene(color, background, shape, cx, cy, radius))
    return scenes


def _inside(shape: str, x: torch.Tensor, y: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Which supersamples ``shape`` covers: ``x`` (1, 1, W) and ``y`` (1, H, 1) in float32
    canvas pixels, centres and radii (N, 1, 1) in float64 (float32 on MPS) -> (N, H, W)
    booleans. Each float64 expression is rounded to float32 where it meets the grid, as Python
    floats are, so that a batch of scenes gets the same bits as one scene at a time."""
    dx, dy = x - cx.float(), y - cy.float()
    if shape == "circle":
        return dx**2 + dy**2 <= (r**2).float()
    if shape == "square":
        half = (r * math.sqrt(math.pi) / 2).float()  # same area as the circle
        return (dx.abs() <= half) & (dy.abs() <= half)
    # An upright equilateral triangle inscribed in the circle of radius r.
    top, bottom, h = (cy - r).float(), (cy + 0.5 * r).float(), (1.5 * r).float()
    half_width = (y - top) / h * r.float() * math.sqrt(3) / 2
    return (y >= top) & (y <= bottom) & (dx.abs() <= half_width)


def shape_coverage(
    geometry: torch.Tensor, size: int = SIZE, shapes: tuple[str, ...] = SHAPES
) -> torch.Tensor:
    """(N, 3) centres and radii (cx, cy, r) in pixels of the SIZE-square canvas -> (N, S, size,
    size): the share of each pixel that each of ``shapes`` covers there (anti-aliased: the mean
    of 4x4 samples), with the canvas drawn ``size`` pixels square, on ``geometry``'s device.
    Computed in one go for a batch (the image prior's redrawings)."""
    device = geometry.device
    grid = torch.arange(size * _SUPERSAMPLE, dtype=torch.float32, device=device) + 0.5
    grid = grid / _SUPERSAMPLE * (SIZE / size)
    exact = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    cx, cy, r = geometry.to(exact).view(-1, 3, 1, 1).unbind(1)  # (N, 1, 1) each
    x, y = grid.view(1, 1, -1), grid.view(1, -1, 1)
    masks = torch.stack([_inside(shape, x, y, cx, cy, r) for shape in shapes], 1)
    return F.avg_pool2d(masks.float(), _SUPERSAMPLE)  # (N, S, size, size)


def rgb(name: str) -> torch.Tensor:
    """A colour by name -> (3, 1, 1) in [0, 1]."""
    return PALETTE[list(COLORS).index(name)].view(3, 1, 1)


def coverage(scene: Scene, size: int = SIZE) -> torch.Tensor:
    """(1, size, size): the share of each pixel that the scene's shape covers (anti-aliased),
    with the scene's SIZE-square canvas drawn ``size`` pixels square."""
    geometry = torch.tensor([[scene.cx, scene.cy, scene.radius]], dtype=torch.float64)
    return shape_coverage(geometry, size, (scene.shape,))[0]


def blend(covered: torch.Tensor, color: torch.Tensor, under: torch.Tensor) -> torch.Tensor:
    """``color`` where ``covered`` is 1, ``under`` where it is 0, mixed in between."""
    return covered * color + (1 - covered) * under


def draw_shape(image: torch.Tensor, scene: Scene) -> torch.Tensor:
    """Draw the scene's shape (not its background) over ``image`` (3, S, S), anti-aliased."""
    return blend(coverage(scene, image.shape[-1]), rgb(scene.color), image)


def render(scenes: list[Scene], size: int = SIZE) -> torch.Tensor:
    """Scenes -> (N, 3, size, size) in [0, 1]."""
    backgrounds = [rgb(s.background).expand(3, size, size) for s in scenes]
    return torch.stack([draw_shape(bg, s) for bg, s in zip(backgrounds, scenes, strict=True)])
