"""Run directories and frames: atomic PNGs that carry the prompt, seed, iteration and config."""

from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from vqclip.core.config import GenerationConfig
from vqclip.core.files import temp_beside, write_atomic
from vqclip.core.limits import check_regular

__all__ = [
    "check_output_dir",
    "create_run_dir",
    "save_png",
    "read_png_metadata",
    "FrameWriter",
    "frame_paths",
    "frame_iteration",
    "set_aside_from",
    "list_runs",
    "run_picture",
]

FRAMES = "frames"
TILED = "tiled"  # a tile's 2x2 preview beside final.png: tiled.png (tiled-K.png in a batch)
DEPTH = "depth"  # a 3D animation's depth images, with save_depth


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "run"


def check_output_dir(output_dir: str) -> None:
    """Refuse an output directory that cannot be made or written, without making it."""
    path = Path(output_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(
            f"output_dir: {existing} is a file; expected a directory for {output_dir!r}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output_dir: {existing} is not writable; expected a directory of yours")


def create_run_dir(config: GenerationConfig) -> Path:
    """Make a new, empty run directory; an existing one is never reused or overwritten."""
    root = Path(config.output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"output_dir: cannot make {root}: {error.strerror or error}") from error
    first = config.prompts or (config.batch_prompts or ("",))[0]
    prompt = first.split("|")[0].split(":")[0] or "image"
    base = config.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(prompt)}-s{config.seed}"
    if Path(base).name != base or base in (".", ".."):  # GenerationConfig checks it too
        raise ValueError(f"run_name: {base!r} is not a plain folder name inside {root}")
    for n in range(10_000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()  # atomic: fails if it exists
        except FileExistsError:
            continue
        (path / FRAMES).mkdir()
        if config.save_depth and config.animation_mode == "3D":
            (path / DEPTH).mkdir()
        write_atomic(path / "config.json", config.to_json().encode())
        return path
    raise FileExistsError(f"no free run directory name under {root} for {base!r}")


def save_png(path: Path, pixels: np.ndarray, metadata: dict[str, Any]) -> None:
    """Save (H, W, 3) uint8 as a PNG with text metadata, atomically; never overwrites."""
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"refusing to overwrite {path}")
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    tmp = temp_beside(path)
    try:
        Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=info)
        os.link(tmp, path)  # atomic, and fails if another writer got there since the check
    except FileExistsError:
        raise FileExistsError(f"refusing to overwrite {path}") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        os.replace(tmp, path)  # a file system without hard links (some network mounts)
    finally:
        tmp.unlink(missing_ok=True)


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """The text chunks that come before a PNG's pixels (where vqclip writes them), read without
    decoding the pixels; a FIFO or device is refused before it is opened."""
    check_regular(path, "png")
    with Image.open(path) as image:
        return {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}


_FRAME_NAME = re.compile(r"^(\d+)(?:-(\d+))?\.png$")  # NNNNNN.png, or NNNNNN-K.png in a batch


def frame_paths(run_dir: str | Path) -> list[Path]:
    """The saved frames of a run, in order: by iteration, then by batch index (``-10`` after
    ``-9``, where names alone would put it after ``-1``)."""
    frames = Path(run_dir) / FRAMES
    if frames.is_symlink():
        raise ValueError(f"{frames} is a symlink; expected the run's own frames directory")
    return sorted(frames.glob("[0-9]*.png"), key=_frame_key)


def list_runs(output_dir: str | Path) -> list[Path]:
    """The run directories under ``output_dir`` (those with a ``config.json``), newest first;
    symlinks are left out, so that a planted link cannot show a file from elsewhere."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if not p.is_symlink() and _is_file(p / "config.json")]
    return sorted(runs, key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)


def run_picture(run_dir: str | Path) -> Path | None:
    """The image that shows a run: its final image, else its latest frame (None: neither)."""
    run_dir = Path(run_dir)
    finals = sorted(p for p in run_dir.glob("final*.png") if _is_file(p))
    frames = [p for p in frame_paths(run_dir) if _is_file(p)]
    return (finals or frames[-1:] or [None])[0]


def _is_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def frame_iteration(path: Path) -> int:
    """The iteration of a frame named ``NNNNNN.png`` or ``NNNNNN-K.png`` (batch index K)."""
    return _frame_key(path)[0]


def _frame_key(path: Path) -> tuple[int, int]:
    match = _FRAME_NAME.match(path.name)
    if match is None:
        raise ValueError(
            f"{path} is not a frame's name; expected NNNNNN.png or NNNNNN-K.png (iteration, "
            "batch index) in a run's frames directory: move it out"
        )
    return int(match[1]), int(match[2] or 0)


def set_aside_from(run_dir: str | Path, iteration: int) -> Path | None:
    """Move what a run made from ``iteration`` on (frames, depth images, final images, video)
    into a new ``superseded-NNNNNN`` directory of the run, so that resuming there rewrites none
    of it; returns that directory, or None when there was nothing to move."""
    run_dir = Path(run_dir)
    later = [p for p in frame_paths(run_dir) if frame_iteration(p) >= iteration]
    later += [*run_dir.glob("final*.png"), *run_dir.glob(f"{TILED}*.png"), *run_dir.glob("video.*")]
    depth = run_dir / DEPTH
    deeper = [] if depth.is_symlink() or not depth.is_dir() else [
        p for p in sorted(depth.glob("[0-9]*.png")) if frame_iteration(p) >= iteration
    ]  # fmt: skip
    if not later and not deeper:
        return None
    for n in range(10_000):
        aside = run_dir / f"superseded-{iteration:06d}{f'-{n}' if n else ''}"
        try:
            aside.mkdir()  # atomic: fails if it exists
        except FileExistsError:
            continue
        for path in later:
            os.replace(path, aside / path.name)
        for path in deeper:  # beside the frames of the same names
            os.replace(path, aside / f"{DEPTH}-{path.name}")
        return aside
    raise FileExistsError(f"no free name for superseded-{iteration:06d} in {run_dir}")


class FrameWriter:
    """A loop callback that saves each displayed image as ``frames/NNNNNN.png``."""

    def __init__(self, run_dir: Path | None, config: GenerationConfig) -> None:
        self.run_dir = (
            run_dir  # None: a process that writes nothing (not torch.distributed's rank 0)
        )
        self.config = config
        self.saved: list[Path] = frame_paths(run_dir) if run_dir else []  # a resumed run's count

    def metadata(self, iteration: int, index: int, motion: dict | None = None) -> dict[str, Any]:
        """A PNG's text: its prompts, seed, step and config (and an animation frame's motion)."""
        extra = {"motion": json.dumps(motion)} if motion else {}
        return {
            **extra,
            "prompts": self.config.batch_prompts[index]
            if self.config.batch_prompts
            else self.config.prompts,
            "seed": str(self.config.seed),
            "iteration": str(iteration),
            "batch_index": str(index),
            "config": self.config.to_json(),
            "Software": "vqclip",
        }

    def save(
        self, name: str, pixels: list[np.ndarray], iteration: int, motion: dict | None = None
    ) -> list[Path]:
        """Save one PNG per image of the batch under ``name`` (suffixed when batched)."""
        if self.run_dir is None:
            return []
        paths = []
        for index, array in enumerate(pixels):
            stem = name if len(pixels) == 1 else f"{name}-{index}"
            path = self.run_dir / f"{stem}.png"
            save_png(path, array, self.metadata(iteration, index, motion))
            paths.append(path)
        return paths

    def __call__(self, info: dict[str, Any]) -> None:
        if "image" in info and self.run_dir is not None:
            from vqclip.core.images import to_uint8

            pixels = [to_uint8(image) for image in info["image"]]
            name = f"{FRAMES}/{info['iteration']:06d}"
            self.saved += self.save(name, pixels, info["iteration"], info.get("motion"))
        if "depth" in info and self.run_dir is not None:
            self._save_depth(info["depth"], info["iteration"])

    def _save_depth(self, depth: list[np.ndarray], iteration: int) -> None:
        """A 3D frame's depth images (:func:`vqclip.run.motion.depth_pixels`) in ``depth/``."""
        folder = self.run_dir / DEPTH
        if folder.is_symlink() or not folder.is_dir():
            raise ValueError(f"{folder}: expected the run's own depth directory (save_depth)")
        for index, pixels in enumerate(depth):
            stem = f"{iteration:06d}" if len(depth) == 1 else f"{iteration:06d}-{index}"
            save_png(folder / f"{stem}.png", pixels, self.metadata(iteration, index))
