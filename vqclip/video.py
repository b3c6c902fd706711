"""Frames -> H.264 MP4 through imageio-ffmpeg (yuv420p, even dimensions). Needs no torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from vqclip.frames import frame_paths

__all__ = ["assemble_video", "count_video_frames"]


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


def count_video_frames(path: str | Path) -> int:
    """Frames in a video, counted by decoding it (container metadata may say inf)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
