"""Restyling a video, as the classic scripts' video style transfer does.

Each frame of ``init_video`` starts (and, with ``init_weight``, anchors) its own run of
``max_iterations`` steps toward the prompts; ``frames/NNNNNN.png`` is frame N's result. Every
frame's run makes the same random draws (cutouts, augmentations, noise), so that neighbouring
frames, which differ little, change alike instead of flickering. A stopped restyle keeps the
frames it made and goes on from the first one missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vqclip.config import GenerationConfig
from vqclip.frames import FrameWriter, frame_iteration
from vqclip.images import image_tensor, load_image, to_uint8
from vqclip.loop import Callback, Loop, best_candidates, run_loop, start_state
from vqclip.video import count_video_frames, read_video_frames

__all__ = ["frames_to_restyle", "restyle_frames", "restyle_frame", "last_frames"]


def frames_to_restyle(config: GenerationConfig) -> int:
    """How many frames a run makes one after another: those of ``init_video`` that it restyles
    (at most ``video_frames``), or 1 for a run without one."""
    return count_video_frames(config.init_video, config.video_frames) if config.init_video else 1


def restyle_frames(
    config: GenerationConfig,
    loop: Loop,
    generator: torch.Generator,
    writer: FrameWriter,
    callback: Callback | None = None,
) -> int:
    """Restyle every frame of ``config.init_video`` that ``writer`` has not saved yet; returns
    how many it made. Reports carry the frame index as ``"frame"``."""
    done = {frame_iteration(path) for path in writer.saved}
    draws = generator.get_state()  # every frame's run starts its draws here
    made = 0
    for index, pixels in enumerate(read_video_frames(config.init_video, config.video_frames)):
        if index in done:
            continue

        def report(info: dict, index: int = index) -> None:
            if callback:
                callback({**info, "frame": index})

        generator.set_state(draws)
        image = restyle_frame(config, loop, generator, pixels, report)
        writer.saved += writer.save(
            f"frames/{index:06d}", [to_uint8(x) for x in image], config.max_iterations
        )
        made += 1
    return made


def restyle_frame(
    config: GenerationConfig,
    loop: Loop,
    generator: torch.Generator,
    pixels: np.ndarray,
    callback: Callback | None = None,
) -> torch.Tensor:
    """One video frame, (H, W, 3) uint8 -> its restyled image (B, 3, H, W) in [0, 1]."""
    frame = image_tensor(pixels, (config.width, config.height)).to(generator.device)
    count = config.batch_size * config.best_of
    latent = loop.generator.encode(frame).repeat(count, 1, 1, 1)
    state = start_state(latent, config.optimizer, config.step_size, generator, config.latent_levels)
    image = run_loop(loop, state, config.max_iterations, config.display_frequency, callback)
    return best_candidates(loop, image, config.best_of)


def last_frames(saved: list[Path]) -> torch.Tensor:
    """The saved images of the last frame, (B, 3, H, W) in [0, 1]."""
    last = frame_iteration(saved[-1])
    return torch.cat([load_image(path) for path in saved if frame_iteration(path) == last])
