"""Videos through imageio-ffmpeg: frames -> H.264 MP4 (yuv420p, even dimensions), and a video's
frames read back (to restyle it). Needs no torch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vqclip.frames import frame_paths

__all__ = [
    "assemble_video",
    "default_fps",
    "count_video_frames",
    "check_video",
    "video_fps",
    "read_video_frames",
]


def _even(pixels: np.ndarray) -> np.ndarray:
    """Pad (H, W, 3) by edge replication to even height and width (yuv420p needs them)."""
    height, width = pixels.shape[:2]
    return np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def assemble_video(
    run_dir: str | Path,
    fps: float = 10.0,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the run's frames to ``output`` (default ``RUN_DIR/video.mp4``); returns its path."""
    import imageio_ffmpeg

    run_dir = Path(run_dir)
    frames = frame_paths(run_dir)
    if not frames:
        raise ValueError(f"no frames in {run_dir / 'frames'}: expected PNGs saved by a run")
    if not fps > 0:
        raise ValueError(f"fps: expected a positive number, got {fps!r}")
    output = Path(output) if output else run_dir / "video.mp4"
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    first = _even(np.asarray(Image.open(frames[0]).convert("RGB")))
    size = (first.shape[1], first.shape[0])
    tmp = output.with_name(f".{output.stem}.part{output.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(tmp), size, fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        macro_block_size=1, quality=None, output_params=["-crf", "18"],
    )  # fmt: skip
    writer.send(None)  # start ffmpeg
    try:
        for path in frames:
            pixels = _even(np.asarray(Image.open(path).convert("RGB")))
            if (pixels.shape[1], pixels.shape[0]) != size:
                raise ValueError(f"frame {path} is {pixels.shape[1]}x{pixels.shape[0]}, not {size}")
            writer.send(np.ascontiguousarray(pixels))
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)  # no half-written video is left behind
        raise
    os.replace(tmp, output)
    return output


def default_fps(run_dir: str | Path) -> float:
    """The frame rate for a run's video: a restyled video's own, else 10."""
    from vqclip.config import GenerationConfig

    path = Path(run_dir) / "config.json"
    init_video = GenerationConfig.from_json(path.read_text()).init_video if path.is_file() else None
    return video_fps(init_video) if init_video else 10.0


def count_video_frames(path: str | Path, limit: int = 0) -> int:
    """Frames in a video, counted by decoding it (container metadata may say inf); at most
    ``limit`` when it is not 0."""
    import imageio_ffmpeg

    check_video(path, "video")
    count = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    return min(count, limit) if limit else count


def _open_video(path: str | Path, field: str) -> tuple[Iterator[Any], dict[str, Any]]:
    """Start ffmpeg on a video: (its frame generator, its metadata); clear errors for bad files."""
    import imageio_ffmpeg

    if not Path(path).is_file():
        raise ValueError(f"{field}: video file {str(path)!r} does not exist")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as error:
        reader.close()
        raise ValueError(
            f"{field}: {str(path)!r} is not a readable video (expected MP4, WebM, GIF, ...): "
            f"{str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__}"
        ) from None
    return reader, meta


def check_video(path: str | Path, field: str = "init_video") -> None:
    """Raise ``ValueError`` naming ``field`` if ``path`` is missing or not a readable video."""
    reader, _ = _open_video(path, field)
    reader.close()


def video_fps(path: str | Path) -> float:
    """A video's frame rate."""
    reader, meta = _open_video(path, "video")
    reader.close()
    return float(meta["fps"])


def read_video_frames(path: str | Path, limit: int = 0) -> Iterator[np.ndarray]:
    """A video's frames as (H, W, 3) uint8 arrays, in order; at most ``limit`` (0: all)."""
    reader, meta = _open_video(path, "init_video")
    width, height = meta["size"]
    try:
        for index, raw in enumerate(reader):
            if limit and index >= limit:
                break
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    finally:
        reader.close()
