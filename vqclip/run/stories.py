"""What changes during a run: the prompts, phase by phase, the zoom of a zoom video and the
camera of an animation.

``"a forest ^ a city at night | neon:0.5"`` is a story of two phases, each a ``|`` list of
prompts. Each phase holds for ``prompt_every`` iterations (0: an equal share of
``max_iterations``) and the last one holds to the end; an animation's prompts keyed by frame
(``"0: a forest | 50: a city"``) change at their frames. With ``zoom_every``, every that many
iterations the image is zoomed (scaled about its centre, shifted, turned), encoded back to a
latent, and the optimiser starts afresh from it, so that the run's frames become an endless
zoom: the classic scripts' zoom-video mode. A zoom belongs to the step it comes before, so a
state saved at iteration ``k`` is always the state before any zoom at ``k``, and a resumed run
zooms exactly where an unbroken one does.

An animation (``animation_mode`` 2D or 3D) is the same mechanism with a frame every
``steps_per_frame`` steps: before each frame's first step the previous frame is moved along the
camera path (:mod:`vqclip.run.motion`, the schedules' values at that frame) and encoded, and
the optimiser starts afresh from it; a frame is the image its last step scored, saved with the
values that moved it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import replace

import torch

from vqclip.core.config import GenerationConfig
from vqclip.core.prompts import is_keyed, split_keyed
from vqclip.loop.optimise import Callback, Loop, LoopState, render, run_loop, start_state
from vqclip.run.motion import CameraPath, depth_pixels, warp_2d

__all__ = [
    "phase_starts",
    "phase_at",
    "next_change",
    "loop_at",
    "run_schedule",
    "zoom_due",
    "zoom_state",
    "frame_due",
    "move_state",
]


def phase_starts(config: GenerationConfig, phases: int) -> tuple[int, ...]:
    """The step at which each prompt phase starts: a story's phases every ``prompt_every``
    steps (0: an equal share of ``max_iterations``); an animation's keyed prompts at their
    frames' first steps (the first key from step 0)."""
    if phases <= 1:
        return (0,)
    if is_keyed(config.prompts):
        frames = [frame for frame, _ in split_keyed(config.prompts)]
        return (0, *(config.frame_start(frame) for frame in frames[1:]))
    length = config.prompt_every or math.ceil(config.max_iterations / phases)
    return tuple(index * length for index in range(phases))


def phase_at(iteration: int, starts: tuple[int, ...]) -> int:
    """The index of the phase in force at step ``iteration``."""
    return bisect.bisect_right(starts, iteration) - 1


def next_change(iteration: int, config: GenerationConfig, phases: int) -> int:
    """The first step after ``iteration`` at which the prompts change or the image is zoomed,
    or ``config.max_iterations`` (which is -1 for a run until interrupted) if none comes first."""
    changes = [start for start in phase_starts(config, phases) if start > iteration][:1]
    changes += [start for start in config.cut_changes() if start > iteration][:1]
    if config.animation_mode != "none":
        first, every = config.first_steps(), config.steps_per_frame
        changes.append(first if iteration < first else first + ((iteration - first) // every + 1) * every)  # fmt: skip
    if config.zoom_every:
        first, every = _first_zoom(config), config.zoom_every
        changes.append(
            first if iteration < first else first + ((iteration - first) // every + 1) * every
        )
    if config.max_iterations != -1:
        changes.append(config.max_iterations)
    return min(changes) if changes else -1


def _first_zoom(config: GenerationConfig) -> int:
    return config.zoom_start or config.zoom_every


def zoom_due(iteration: int, config: GenerationConfig) -> bool:
    """Whether the image is zoomed before step ``iteration``: at ``zoom_start`` (default
    ``zoom_every``) and every ``zoom_every`` steps after it."""
    first = _first_zoom(config)
    return (
        bool(config.zoom_every)
        and iteration >= first
        and (iteration - first) % config.zoom_every == 0
    )


def frame_due(iteration: int, config: GenerationConfig) -> bool:
    """Whether an animation's previous frame is moved into a new one before step ``iteration``."""
    return config.frame_ended(iteration) is not None


def loop_at(loop: Loop, iteration: int, config: GenerationConfig) -> Loop:
    """``loop`` with the prompt phase and the cuts (of a cut schedule) in force at step
    ``iteration``."""
    if config.cut_overview:
        overview, crops, grey = config.cuts_at(iteration)
        loop = replace(loop, cuts=replace(loop.cuts, cutn=overview + crops, overview=overview, grey=grey))  # fmt: skip
    if not loop.objective.prompts.phases:
        return loop
    if config.prompt_blend:  # keyed by frame: the frame this step belongs to
        return loop.at_phase(*config.prompt_at(config.frame_at(iteration)))
    count = len(loop.objective.prompts.phases)
    return loop.at_phase(phase_at(iteration, phase_starts(config, count)))


def run_schedule(
    loop: Loop,
    state: LoopState,
    config: GenerationConfig,
    callback: Callback | None = None,
    path: CameraPath | None = None,
) -> torch.Tensor:
    """:func:`vqclip.loop.optimise.run_loop` up to ``config.max_iterations``, segment by segment: a
    new segment at each change of prompt phase, at each zoom and at each animation frame (along
    ``path``, made here if not given). Returns the final image."""
    phases = len(loop.objective.prompts.phases) or 1
    display, report = config.display_frequency, callback
    if config.animation_mode != "none":
        path = path or CameraPath(config, state.start.device)
        display, report = 1, _frame_ends(config, path, callback)
    while True:
        current = loop_at(loop, state.iteration, config)
        if zoom_due(state.iteration, config):
            zoom_state(current, state, config)
        if path is not None and frame_due(state.iteration, config):
            move_state(current, state, config, path)
        end = next_change(state.iteration, config, phases)
        image = run_loop(current, state, end, display, report)
        if end == config.max_iterations:
            return image


def _frame_ends(config: GenerationConfig, path: CameraPath, callback: Callback | None) -> Callback:
    """Reports with an image only at each frame's last step, carrying the frame's values."""

    def report(info: dict) -> None:
        if "image" in info:
            frame = config.frame_ended(info["iteration"] + 1)
            if frame is None:
                info = {k: v for k, v in info.items() if k != "image"}
            else:
                info = {**info, "motion": path.values(frame)}
                if config.save_depth and config.animation_mode == "3D":
                    info["depth"] = depth_pixels(path.depth(info["image"]))
        if callback:
            callback(info)

    return report


@torch.no_grad()
def zoom_state(loop: Loop, state: LoopState, config: GenerationConfig) -> None:
    """Zoom the current image and start the optimisation afresh from its parameters (in place:
    the generator and the iteration go on)."""
    shift = (config.zoom_shift_x, config.zoom_shift_y)
    image = warp_2d(render(loop, state), config.zoom_scale, config.zoom_rotate, shift)
    _start_from(loop, state, config, image)


@torch.no_grad()
def move_state(loop: Loop, state: LoopState, config: GenerationConfig, path: CameraPath) -> None:
    """Move the current image into the next frame that takes steps, frame by frame (``cadence``
    of them), and start afresh from it (in place)."""
    image, key = render(loop, state), config.frame_ended(state.iteration)
    for frame in range(key + 1, key + config.cadence + 1):
        image = path.move(image, frame)
    _start_from(loop, state, config, path.start(image, key + config.cadence))


def _start_from(
    loop: Loop, state: LoopState, config: GenerationConfig, image: torch.Tensor
) -> None:
    """The optimisation afresh from ``image``'s parameters; the rng and the iteration go on."""
    fresh = start_state(
        loop.generator.encode(image),
        config.optimizer,
        config.step_size,
        state.rng,
        config.latent_levels,
    )
    state.levels, state.start, state.optimizer = fresh.levels, fresh.start, fresh.optimizer
    state.average = None  # the average starts again from the zoomed image
