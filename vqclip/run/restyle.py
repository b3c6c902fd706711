"""Restyling a video, as the classic scripts' video style transfer does.

Each frame of ``init_video`` (every ``video_stride``-th, or those nearest ``video_fps``) starts
(and, with ``init_weight``, anchors) its own run of ``max_iterations`` steps toward the prompts;
``frames/NNNNNN.png`` is frame N's result. Every frame's run makes the same random draws
(cutouts, augmentations, noise), so that neighbouring frames, which differ little, change alike.

Independent frames still flicker: each finds its own way to the prompts. With
``frame_init_weight`` a frame starts from the previous frame's result blended with its own
source frame, and with ``temporal_weight`` it is pulled toward that result, as the video tools
of pytti-core and Disco Diffusion do. Once anything moves, those compare pixels that do not
correspond: with ``flow_warp`` the previous result is first warped along the source's optical
flow (:mod:`vqclip.models.flow`) and blended in only where the flow holds (the forward-backward
check of Ruder et al.), and ``flow_weight`` pulls the frame toward that warp there. The previous
result is read back from its saved PNG and the flow estimated from the source frames, so that a
stopped restyle goes on, from the first frame missing, exactly as it would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vqclip.core.config import GenerationConfig
from vqclip.core.images import image_tensor, load_image, to_uint8
from vqclip.loop.objective import TemporalTerm
from vqclip.loop.optimise import Callback, Loop, best_candidates, run_loop, start_state
from vqclip.models.flow import FlowFn, consistent, flows, warp
from vqclip.run.frames import FrameWriter, frame_iteration
from vqclip.run.stories import loop_at
from vqclip.run.video import count_video_frames, frame_stride, read_video_frames

__all__ = [
    "frames_to_restyle",
    "restyle_frames",
    "restyle_frame",
    "last_frames",
    "saved_frame",
    "Remote",
]

# Restyles frames elsewhere: (config, (index, pixels) frames) -> (index, uint8 images), in order.
Remote = Callable[
    [GenerationConfig, Iterator[tuple[int, np.ndarray]]], Iterator[tuple[int, list[np.ndarray]]]
]


def frames_to_restyle(config: GenerationConfig) -> int:
    """How many frames a run makes one after another: those of ``init_video`` that it restyles
    (at most ``video_frames``), or 1 for a run without one."""
    if not config.init_video:
        return 1
    return count_video_frames(config.init_video, config.video_frames, _stride(config))


def _stride(config: GenerationConfig) -> int:
    return frame_stride(config.init_video, config.video_stride, config.video_fps)


def restyle_frames(
    config: GenerationConfig,
    loop: Loop | None,
    rng: torch.Generator | None,
    writer: FrameWriter,
    callback: Callback | None = None,
    remote: Remote | None = None,
    estimate: FlowFn | None = None,
) -> int:
    """Restyle every frame of ``config.init_video`` that ``writer`` has not saved yet; returns
    how many it made. Reports carry the frame index as ``"frame"``. ``estimate``: the flow
    estimator of a restyle that follows the flow (``config.follows_flow()``). ``remote``: where the
    frames are restyled instead of here (handed in by the caller, such as
    :func:`vqclip.scale.cluster.on_ray`: the Ray cluster at an address): it takes the config and
    the ``(index, pixels)`` frames, and yields ``(index, images)`` in order."""
    done = {frame_iteration(path) for path in writer.saved}
    made = 0
    frames = read_video_frames(config.init_video, config.video_frames, _stride(config))
    if remote is not None:  # the workers build the loop: ``loop`` and ``rng`` are None
        todo = ((index, pixels) for index, pixels in enumerate(frames) if index not in done)
        for index, images in remote(config, todo):
            writer.saved += writer.save(f"frames/{index:06d}", images, config.max_iterations)
            if callback:
                callback({"iteration": config.steps() - 1, "frame": index})
            made += 1
        return made
    draws = rng.get_state()  # every frame's run starts its draws here
    follow = config.frame_init_weight or config.temporal_weight or config.follows_flow()
    history: list[torch.Tensor] = []  # the source frames before this one, resized, nearest last
    for index, pixels in enumerate(frames):
        source = _source(config, pixels, rng.device)
        earlier, history = history, (history + [source])[-(1 + config.flow_long_term) :]
        if index in done:
            continue

        def report(info: dict, index: int = index) -> None:
            if callback:
                callback({**info, "frame": index})

        rng.set_state(draws)
        previous = saved_frame(writer.saved, index - 1) if follow and index else None
        motion, further = None, []
        if estimate is not None and earlier:
            motion = frame_motion(estimate, earlier[-1], source)
            for back, before in enumerate(reversed(earlier[:-1]), start=2):  # flow_long_term
                further.append((saved_frame(writer.saved, index - back), frame_motion(estimate, before, source)))  # fmt: skip
        image = restyle_frame(config, loop, rng, pixels, report, previous, motion, further)
        writer.saved += writer.save(
            f"frames/{index:06d}", [to_uint8(x) for x in image], config.max_iterations
        )
        made += 1
    return made


def _source(config: GenerationConfig, pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    return image_tensor(pixels, (config.width, config.height)).to(device)


def frame_motion(
    estimate: FlowFn, before: torch.Tensor, frame: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """From the previous source frame to this one ((1, 3, H, W) each): the flow that reads
    the previous frame at this one's pixels, and where it holds (1) or not (0), (1, 1, H, W)."""
    back, ahead = flows(estimate, frame, before)
    return back, consistent(back, ahead)


def _add_pull(loop: Loop, pull: TemporalTerm) -> Loop:
    return replace(loop, objective=replace(loop.objective, pulls=(*loop.objective.pulls, pull)))


def restyle_frame(
    config: GenerationConfig,
    loop: Loop,
    rng: torch.Generator,
    pixels: np.ndarray,
    callback: Callback | None = None,
    previous: torch.Tensor | None = None,
    motion: tuple[torch.Tensor, torch.Tensor] | None = None,
    further: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = (),
) -> torch.Tensor:
    """One video frame, (H, W, 3) uint8 -> its restyled image (B, 3, H, W) in [0, 1];
    ``previous``: the previous frame's result (B, 3, H, W), which the frame starts from and is
    pulled toward as ``frame_init_weight`` and ``temporal_weight`` say; ``motion``: the flow
    from :func:`frame_motion`, along which it is warped first for ``flow_warp`` and
    ``flow_weight``; ``further``: the results and motions of frames further back
    (``flow_long_term``), each pulled toward the same way, more weakly the further back."""
    frame = _source(config, pixels, rng.device)
    if previous is not None:  # each image of the batch follows its own; its candidates alike
        previous = previous.to(frame.device).repeat_interleave(config.best_of, 0)
        frame = torch.lerp(frame, previous, config.frame_init_weight)
        if config.temporal_weight:
            loop = _add_pull(loop, TemporalTerm(weight=config.temporal_weight, target=previous))
    if previous is not None and motion is not None:
        flow, holds = (x.to(frame.device) for x in motion)
        warped = warp(previous, flow.expand(len(previous), -1, -1, -1))
        if config.flow_warp:  # where the flow holds, the warped result; the source elsewhere
            frame = torch.lerp(frame, warped, config.flow_blend * holds)
        if config.flow_weight:
            pull = TemporalTerm(name="flow", weight=config.flow_weight, target=warped, mask=holds)
            loop = _add_pull(loop, pull)
    for back, (result, (flow, holds)) in enumerate(further, start=2):  # frames further back
        result = result.to(frame.device).repeat_interleave(config.best_of, 0)
        warped = warp(result, flow.to(frame.device).expand(len(result), -1, -1, -1))
        weight = config.flow_weight / back
        loop = _add_pull(loop, TemporalTerm(name=f"flow-{back}", weight=weight, target=warped, mask=holds.to(frame.device)))  # fmt: skip
    latent = loop.generator.encode(frame)
    if len(latent) == 1:
        latent = latent.repeat(config.batch_size * config.best_of, 1, 1, 1)
    state = start_state(latent, config.optimizer, config.step_size, rng, config.latent_levels)
    for end in [*config.cut_changes()[1:], config.max_iterations]:  # a cut schedule's segments
        current = loop_at(loop, state.iteration, config)
        image = run_loop(current, state, end, config.display_frequency, callback)
    return best_candidates(loop, image, config.best_of)


def last_frames(saved: list[Path]) -> torch.Tensor:
    """The saved images of the last frame, (B, 3, H, W) in [0, 1]."""
    return saved_frame(saved, frame_iteration(saved[-1]))


def saved_frame(saved: list[Path], index: int) -> torch.Tensor:
    """The saved images of frame ``index``, (B, 3, H, W) in [0, 1]."""
    return torch.cat([load_image(path) for path in saved if frame_iteration(path) == index])
