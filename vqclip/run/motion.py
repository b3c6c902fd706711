"""Camera motion between animation frames: the 2D move of a picture and the 3D move of a
camera through a scene whose depth is known.

2D (Disco Diffusion's and Deforum's 2D mode): the picture is moved ``translation_x`` pixels right
and ``translation_y`` down, then scaled ``zoom`` times about its centre and turned ``angle``
degrees anticlockwise: the order and the units of their 2D mode, and of vqclip's zoom video.

3D: a pinhole camera. Pixel centres, in units of half the shorter side from the image's
centre, are rays ``(x / f, y / f, 1)`` with ``f = 1 / tan(fov / 2)``: x right, y down, z into the
scene. The camera moves by ``T = (translation_x, translation_y, translation_z) / 200`` (the
peers' translation scale; depth is in the same units, 1 to 3 for a normalised depth map) and
turns by ``R = Rx · Ry · Rz`` (``rotation_3d_x/y/z`` degrees). Each output pixel's point lies on
its ray at the depth the previous frame had there, less the camera's forward move; in the
previous camera it is ``R · p + T``, projected back to a pixel, and one ``grid_sample`` reads
the previous frame there. Exact for any rotation and for any move of a plane facing the
camera; to first order in the move for a scene of several depths, as the peers' warp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vqclip.core import plugins
from vqclip.core.config import GenerationConfig
from vqclip.core.images import load_image
from vqclip.models.depth import depth_estimator, depth_models
from vqclip.run.frames import FrameWriter, create_run_dir

__all__ = [
    "TRANSLATION_SCALE", "warp_2d", "warp_3d", "rotation",
    "plane_depth", "NEAR", "FAR", "normalised_depth", "CameraPath", "MODE_SCHEDULES",
    "calibration_card", "preview_motion", "depth_pixels", "describe", "Tweens", "check_depth_model",
]  # fmt: skip

TRANSLATION_SCALE = 1 / 200  # scene units per unit of translation_x/y/z
NEAR, FAR = 1.0, 3.0  # a normalised depth map's range; a plane facing the camera sits at NEAR


def warp_2d(
    image: torch.Tensor,
    zoom: float,
    angle: float = 0.0,
    translation: tuple[float, float] = (0.0, 0.0),
    padding_mode: str = "reflection",
    sampling_mode: str = "bilinear",
) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): moved by ``translation`` = (x, y) pixels, ``zoom`` times
    larger about the centre (< 1 zooms out), turned ``angle`` degrees anticlockwise."""
    batch, _, height, width = image.shape
    cos, sin = math.cos(math.radians(angle)), -math.sin(math.radians(angle))  # y points down
    # Output pixel -> input pixel, in grid_sample's [-1, 1] coordinates (x right, y down).
    theta = torch.tensor(
        [
            [cos / zoom, sin / zoom * height / width, -2 * translation[0] / width],
            [-sin / zoom * width / height, cos / zoom, -2 * translation[1] / height],
        ],
        dtype=image.dtype,
        device=image.device,
    ).expand(batch, 2, 3)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return _sample(image, grid, padding_mode, sampling_mode)


def _sample(image: torch.Tensor, grid: torch.Tensor, padding_mode: str, sampling_mode: str) -> torch.Tensor:  # fmt: skip
    """``grid_sample`` (pixel centres), and ``padding_mode`` "wrap", which it lacks: what leaves
    one side comes in at the other (the image on a torus, as Deforum's and pytti's wrap), read
    from the image padded circularly so that interpolation across the seam sees the other side."""
    if padding_mode != "wrap":
        return F.grid_sample(image, grid, mode=sampling_mode, padding_mode=padding_mode, align_corners=False)  # fmt: skip
    height, width = image.shape[-2:]
    pad = 2  # bicubic reads two pixels either side
    x = torch.remainder(((grid[..., 0] + 1) * width - 1) / 2, width)  # pixel coordinates
    y = torch.remainder(((grid[..., 1] + 1) * height - 1) / 2, height)
    inside = torch.stack([(2 * (x + pad) + 1) / (width + 2 * pad) - 1, (2 * (y + pad) + 1) / (height + 2 * pad) - 1], -1)  # fmt: skip
    padded = F.pad(image, (pad, pad, pad, pad), mode="circular")
    return F.grid_sample(padded, inside, mode=sampling_mode, padding_mode="border", align_corners=False)  # fmt: skip


def rotation(degrees_x: float, degrees_y: float, degrees_z: float) -> torch.Tensor:
    """R = Rx · Ry · Rz, (3, 3) in float64, each a right-handed turn about its axis."""
    x, y, z = (math.radians(a) for a in (degrees_x, degrees_y, degrees_z))
    rx = torch.tensor([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = torch.tensor([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return (rx.double() @ ry.double() @ rz.double()).double()


def plane_depth(image: torch.Tensor) -> torch.Tensor:
    """The depth of a plane facing the camera at ``NEAR``: ``depth_model none``."""
    return torch.full_like(image[:, :1], NEAR)


def _rays(height: int, width: int, focal: float, device: torch.device) -> torch.Tensor:
    """(H, W, 3) rays through the pixel centres, z = 1."""
    half = min(height, width) / 2
    xs = (torch.arange(width, device=device, dtype=torch.float64) + 0.5 - width / 2) / half
    ys = (torch.arange(height, device=device, dtype=torch.float64) + 0.5 - height / 2) / half
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x / focal, y / focal, torch.ones_like(x)], -1)


def warp_3d(
    image: torch.Tensor,
    depth: torch.Tensor,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotation_3d: tuple[float, float, float] = (0.0, 0.0, 0.0),
    fov: float = 40.0,
    padding_mode: str = "border",
    sampling_mode: str = "bilinear",
) -> torch.Tensor:
    """(B, 3, H, W) and its depth (B, 1, H, W) -> the frame the moved camera sees."""
    batch, _, height, width = image.shape
    focal = 1 / math.tan(math.radians(fov) / 2)
    rays = _rays(height, width, focal, image.device)  # (H, W, 3)
    move = torch.tensor(translation, dtype=torch.float64, device=image.device) * TRANSLATION_SCALE
    turn = rotation(*rotation_3d).to(image.device)
    # Each output pixel's point in the new camera: on its ray, at the depth the previous frame
    # had there less the forward move (never behind the camera).
    ahead = (depth[:, 0].double() - move[2]).clamp_min(1e-3 * NEAR)  # (B, H, W)
    points = ahead[..., None] * rays  # (B, H, W, 3)
    before = points @ turn.T + move  # in the previous camera
    z = before[..., 2:].clamp_min(1e-6)
    half = min(height, width) / 2
    pixels = focal * before[..., :2] / z  # units of half the shorter side
    grid = torch.stack([pixels[..., 0] * half / (width / 2), pixels[..., 1] * half / (height / 2)], -1)  # fmt: skip
    return _sample(image, grid.to(image.dtype), padding_mode, sampling_mode)


def normalised_depth(raw: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) estimates -> depth in [NEAR, FAR], per image: nearest at NEAR, farthest at
    FAR; an image whose estimate is not finite or is constant becomes a plane at NEAR."""
    out = []
    for depth in raw.double():
        low, high = depth.min(), depth.max()
        if not torch.isfinite(depth).all() or float(high - low) < 1e-6:
            out.append(torch.full_like(depth, NEAR))
        else:
            out.append(NEAR + (FAR - NEAR) * (depth - low) / (high - low))
    return torch.stack(out).to(raw.dtype)


def depth_pixels(depth: torch.Tensor) -> list[np.ndarray]:
    """(B, 1, H, W) depth in [NEAR, FAR] -> grey (H, W, 3) uint8 images, near white, far black."""
    grey = ((FAR - depth[:, 0].double()) / (FAR - NEAR)).clamp(0, 1).mul(255).round().byte()
    return [one.cpu().numpy()[..., None].repeat(3, -1) for one in grey]


# The schedules each mode moves by: the 2D picture's, the 3D camera's.
MODE_SCHEDULES = {
    "2D": ("zoom", "angle", "translation_x", "translation_y"),
    "3D": ("translation_x", "translation_y", "translation_z", "rotation_3d_x", "rotation_3d_y",
           "rotation_3d_z", "fov"),
}  # fmt: skip


def check_depth_model(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is none, a registry depth model or a plugin's."""
    found = {*depth_models(), *plugins.estimators("depth")}
    if name != "none" and name not in found:
        raise ValueError(f"depth_model: unknown estimator {name!r}; expected none or one of {sorted(found)} (the registry's and the installed plugins')")  # fmt: skip


class CameraPath:
    """An animation's motion from its config: each frame's schedule values, and the move of
    one frame into the next (with the depth estimator the config names, loaded once).
    ``keep_colors``: with ``color_coherence``, what the job that knows where frame 0 is saved
    sets to match a frame's start to its colours (:class:`vqclip.run.coherence.ColorKeeper`)."""

    def __init__(self, config: GenerationConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.mode = config.animation_mode
        self.keep_colors: Callable[[torch.Tensor], torch.Tensor] | None = None
        settled = [name for name, as_is in (("frame_noise", "0"), ("frame_contrast", "1.0")) if getattr(config, name) != as_is]  # fmt: skip
        names = (*MODE_SCHEDULES[self.mode], *settled)  # recorded in each frame's PNG too
        self.schedules = {name: config.schedule(name) for name in names}
        self.estimate = None
        if self.mode == "3D" and config.depth_model != "none":
            check_depth_model(config.depth_model)
            if config.depth_model in depth_models():  # from the registry, fetched by acquire
                self.estimate = depth_estimator(config.depth_model, device)
            else:
                self.estimate = plugins.estimators("depth")[config.depth_model].load(device)

    def values(self, frame: int) -> dict[str, float]:
        """The schedules' values at ``frame``, by setting."""
        frames, seed = self.config.max_frames, max(self.config.seed, 0)
        return {name: s.at(frame, frames, seed) for name, s in self.schedules.items()}

    def depth(self, image: torch.Tensor) -> torch.Tensor:
        """The frame's depth in [NEAR, FAR] (a plane without an estimator)."""
        if self.estimate is None:
            return plane_depth(image)
        return normalised_depth(self.estimate(image))

    def start(self, moved: torch.Tensor, frame: int) -> torch.Tensor:
        """The moved previous frame as ``frame``'s start: frame 0's colours kept (with
        ``color_coherence``), its contrast scaled and noise added as ``frame_contrast`` and
        ``frame_noise`` say. The noise is drawn from the seed and the frame alone (on the CPU),
        so that a resumed run, or another device, draws the same."""
        config = self.config
        image = moved if self.keep_colors is None else self.keep_colors(moved)
        contrast = config.schedule_at("frame_contrast", frame)
        if contrast != 1:
            mean = image.mean((-2, -1), keepdim=True)
            image = (mean + (image - mean) * contrast).clamp(0, 1)
        noise = config.schedule_at("frame_noise", frame)
        if noise:
            rng = torch.Generator().manual_seed((max(config.seed, 0) * 1_000_003 + frame) % 2**63)
            grain = torch.randn(image.shape, generator=rng, dtype=torch.float32)
            image = (image + grain.to(image.device, image.dtype) * noise / 2).clamp(0, 1)
        return image

    def move(self, image: torch.Tensor, frame: int) -> torch.Tensor:
        """The previous frame ``image`` moved into ``frame``."""
        v, config = self.values(frame), self.config
        modes = {"padding_mode": config.padding_mode, "sampling_mode": config.sampling_mode}
        if self.mode == "2D":
            shift = (v["translation_x"], v["translation_y"])
            return warp_2d(image, v["zoom"], v["angle"], shift, **modes)
        moved = (v["translation_x"], v["translation_y"], v["translation_z"])
        turned = (v["rotation_3d_x"], v["rotation_3d_y"], v["rotation_3d_z"])
        return warp_3d(image, self.depth(image), moved, turned, v["fov"], **modes)


class Tweens:
    """The frames between those that take steps, with ``cadence`` N (Disco's turbo, Deforum's
    cadence): after key frame k (every Nth), frame k + j is the key and the one before it,
    each moved frame by frame along the camera path and cross-faded: all the newer just after
    it, more of the older (up to half) as the next key nears, which softens the change it brings
    (after the first key, the newer alone). ``load(k)`` reads key frame k back (from its PNG, so
    that a resumed run makes the same frames); each key is kept as far as it was moved."""

    def __init__(self, path: CameraPath, cadence: int, load: Callable[[int], torch.Tensor]) -> None:  # fmt: skip
        self.path, self.cadence, self.load = path, cadence, load
        self.moved: dict[int, tuple[int, torch.Tensor]] = {}  # a key frame: as far as moved

    def __call__(self, frame: int) -> torch.Tensor:
        """Frame ``frame`` (not a key frame), (B, 3, H, W)."""
        key = frame - frame % self.cadence
        images = []
        for start in (max(key - self.cadence, 0), key):
            reached, image = self.moved.get(start, (start, None))
            if image is None or reached >= frame:  # from its PNG: the first time, or on resume
                reached, image = start, self.load(start)
            for step in range(reached + 1, frame + 1):  # on from where it was last moved to
                image = self.path.move(image, step)
            self.moved[start] = (frame, image)
            images.append(image)
        share = (frame - key) / self.cadence
        return torch.lerp(images[0], images[1], 1 - share / 2 if key else 1.0)


def calibration_card(width: int, height: int) -> torch.Tensor:
    """(1, 3, H, W): a grid of 8-pixel squares in two greys with a red disc at the centre and
    a blue bar to its right, so that a preview shows a move, a turn and a zoom at a glance."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    grid = ((x // 8 + y // 8) % 2) * 0.25 + 0.5
    image = grid.expand(3, height, width).clone()
    radius = min(width, height) / 6
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 <= radius**2
    bar = (x > width / 2 + radius * 1.5) & (x < width / 2 + radius * 2) & ((y - height / 2).abs() < radius)  # fmt: skip
    image[:, disc] = torch.tensor([0.86, 0.12, 0.12])[:, None]
    image[:, bar] = torch.tensor([0.12, 0.24, 0.86])[:, None]
    return image[None]


def describe(frame: int, values: dict[str, float]) -> str:
    """One line of a frame's schedule values, as a preview prints them."""
    return f"frame {frame:4d}  " + "  ".join(f"{k} {v:.4g}" for k, v in values.items())


def preview_motion(
    config: GenerationConfig, report: Callable[[int, dict[str, float]], None] | None = None
) -> tuple[Path, list[Path]]:
    """The camera path alone: the init image (or :func:`calibration_card`) moved frame by frame, no
    perceptor and no optimisation, into a new run directory's ``frames/``, each PNG with its
    values. ``report(frame, values)`` hears of each frame. Returns the run directory and the
    frames."""
    if config.animation_mode == "none":
        raise ValueError("preview_motion: expected animation_mode 2D or 3D, with max_frames")
    size = (config.width, config.height)
    image = load_image(config.init_image, size, "init_image") if config.init_image else calibration_card(*size)  # fmt: skip
    path = CameraPath(config)
    run_dir = create_run_dir(config)
    writer = FrameWriter(run_dir, config)
    for frame in range(config.max_frames):
        if frame:
            image = path.move(image, frame)
        values = path.values(frame)
        writer({"iteration": frame, "image": image, "motion": values})
        if report:
            report(frame, values)
    return run_dir, writer.saved
