"""What changes during a run: the prompts, phase by phase, and the zoom of a zoom video.

``"a forest ^ a city at night | neon:0.5"`` is a story of two phases, each a ``|`` list of
prompts. Each phase holds for ``prompt_every`` iterations (0: an equal share of
``max_iterations``) and the last one holds to the end. With ``zoom_every``, every that many
iterations the image is zoomed (scaled about its centre, shifted, turned), encoded back to a
latent, and the optimiser starts afresh from it, so that the run's frames become an endless
zoom: the classic scripts' zoom-video mode. A zoom belongs to the step it comes before, so a
state saved at iteration ``k`` is always the state before any zoom at ``k``, and a resumed run
zooms exactly where an unbroken one does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vqclip.core.config import GenerationConfig
from vqclip.loop.diffusion import SampleState, run_sampler
from vqclip.loop.optimise import Callback, Loop, LoopState, render, run_loop, start_state

__all__ = [
    "phase_length",
    "phase_at",
    "next_change",
    "loop_at",
    "run_schedule",
    "zoom_due",
    "zoom_image",
    "zoom_state",
]


def phase_length(config: GenerationConfig, phases: int) -> int:
    """Iterations per prompt phase; 0 when there is only one phase."""
    if phases <= 1:
        return 0
    return config.prompt_every or math.ceil(config.max_iterations / phases)


def phase_at(iteration: int, length: int, phases: int) -> int:
    """The index of the phase in force at step ``iteration``."""
    return min(iteration // length, phases - 1) if length else 0


def next_change(iteration: int, config: GenerationConfig, phases: int) -> int:
    """The first step after ``iteration`` at which the prompts change or the image is zoomed,
    or ``config.max_iterations`` (which is -1 for a run until interrupted) if none comes first."""
    length = phase_length(config, phases)
    changes = []
    if length and iteration < length * (phases - 1):
        changes.append((iteration // length + 1) * length)
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


def zoom_image(
    image: torch.Tensor, scale: float, shift: tuple[float, float] = (0.0, 0.0), angle: float = 0.0
) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): ``scale`` times larger about the centre (< 1 zooms out, the
    border mirrored), then moved by ``shift`` = (x, y) pixels and turned ``angle`` degrees
    anticlockwise."""
    batch, _, height, width = image.shape
    cos, sin = math.cos(math.radians(angle)), -math.sin(math.radians(angle))  # y points down
    # Output pixel -> input pixel, in grid_sample's [-1, 1] coordinates (x right, y down).
    theta = torch.tensor(
        [
            [cos / scale, sin / scale * height / width, -2 * shift[0] / width],
            [-sin / scale * width / height, cos / scale, -2 * shift[1] / height],
        ],
        dtype=image.dtype,
        device=image.device,
    ).expand(batch, 2, 3)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(
        image, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def loop_at(loop: Loop, iteration: int, config: GenerationConfig) -> Loop:
    """``loop`` with the prompt phase in force at step ``iteration``."""
    if not loop.objective.prompts.phases:
        return loop
    count = len(loop.objective.prompts.phases)
    return loop.at_phase(phase_at(iteration, phase_length(config, count), count))


def run_schedule(
    loop: Loop,
    state: LoopState | SampleState,
    config: GenerationConfig,
    callback: Callback | None = None,
) -> torch.Tensor:
    """:func:`vqclip.loop.optimise.run_loop` up to ``config.max_iterations``, segment by segment: a
    new segment at each change of prompt phase and at each zoom (a diffusion sample, which has
    neither, to the end of its schedule). Returns the final image."""
    if isinstance(state, SampleState):
        return run_sampler(loop, state, config.display_frequency, callback)
    phases = len(loop.objective.prompts.phases) or 1
    while True:
        current = loop_at(loop, state.iteration, config)
        if zoom_due(state.iteration, config):
            zoom_state(current, state, config)
        end = next_change(state.iteration, config, phases)
        image = run_loop(current, state, end, config.display_frequency, callback)
        if end == config.max_iterations:
            return image


@torch.no_grad()
def zoom_state(loop: Loop, state: LoopState, config: GenerationConfig) -> None:
    """Zoom the current image and start the optimisation afresh from its parameters (in place:
    the generator and the iteration go on)."""
    shift = (config.zoom_shift_x, config.zoom_shift_y)
    image = zoom_image(render(loop, state), config.zoom_scale, shift, config.zoom_rotate)
    fresh = start_state(
        loop.generator.encode(image),
        config.optimizer,
        config.step_size,
        state.rng,
        config.latent_levels,
    )
    state.levels, state.start, state.optimizer = fresh.levels, fresh.start, fresh.optimizer
    state.average = None  # the average starts again from the zoomed image
