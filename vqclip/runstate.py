"""A run's loop state on disk, so that a stopped run goes on exactly where it stopped.

``RUN_DIR/state.pt`` holds what :class:`vqclip.loop.LoopState` holds: the latent's levels,
the starting latent, the optimiser's state, the generator's state and the iteration (or, for a
diffusion sample, :class:`vqclip.diffusion.SampleState`'s), as plain tensors and numbers (read back with the weights-only unpickler, so it cannot run code). The
generation writes it at every display step, at the end, and when it is stopped between steps;
the rest of the run is its ``config.json``. Resuming builds the models and a fresh state from
the config, then puts the saved state in: on a CPU, the resumed run's frames and final image are
bit-identical to those of a run that was never stopped. So that the state is whole when a run
stops, Ctrl-C takes effect between steps (:func:`stop_between_steps`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from vqclip.checkpoints import load_checkpoint
from vqclip.diffusion import SampleState
from vqclip.frames import write_atomic
from vqclip.loop import LoopState

__all__ = ["STATE", "save_state", "read_state", "restore_state", "stop_between_steps"]

log = logging.getLogger(__name__)

STATE = "state.pt"
_KEYS = {"iteration", "levels", "start", "optimizer", "generator", "average"}
_SAMPLE_KEYS = {"iteration", "sample", "pred", "start", "generator"}


def save_state(state: LoopState | SampleState, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a reader never sees half a file)."""
    if isinstance(state, SampleState):
        saved = {
            "iteration": state.iteration,
            "sample": state.sample.detach().cpu(),
            "pred": None if state.pred is None else state.pred.detach().cpu(),
            "start": state.start.cpu(),
            "generator": state.generator.get_state(),
        }
    else:
        saved = {
            "iteration": state.iteration,
            "levels": [level.detach().cpu() for level in state.levels],
            "start": state.start.cpu(),
            "optimizer": state.optimizer.state_dict(),
            "generator": state.generator.get_state(),
            "average": None if state.average is None else state.average.cpu(),
        }
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    write_atomic(path, buffer.getvalue())


def read_state(path: Path) -> dict[str, Any]:
    """The saved state at ``path``, checked to be one that :func:`save_state` wrote."""
    if not path.is_file():
        raise FileNotFoundError(
            f"resume: no saved state at {path}; a run directory gets one at its first display "
            "step (runs made before vqclip saved state cannot be resumed)"
        )
    saved = load_checkpoint(path)
    if isinstance(saved, dict) and set(saved) == _KEYS - {"average"}:  # saved before ema
        saved["average"] = None
    if not isinstance(saved, dict) or set(saved) not in (_KEYS, _SAMPLE_KEYS):
        raise ValueError(
            f"resume: {path} is not a saved loop state (expected keys {sorted(_KEYS)}, or a "
            f"diffusion sample's {sorted(_SAMPLE_KEYS)})"
        )
    return saved


@torch.no_grad()
def restore_state(state: LoopState | SampleState, saved: dict[str, Any]) -> None:
    """Put a saved state into ``state``, a fresh one built from the same config."""
    if isinstance(state, SampleState):
        _restore_sample(state, saved)
        return
    if "levels" not in saved:
        raise ValueError("resume: the saved state is a diffusion sample's, but the config optimises")  # fmt: skip
    shapes = [tuple(level.shape) for level in state.levels]
    if [tuple(level.shape) for level in saved["levels"]] != shapes:
        raise ValueError(
            f"resume: the saved latent has levels {[tuple(x.shape) for x in saved['levels']]}, "
            f"but the run's config builds {shapes}; was config.json edited?"
        )
    for level, value in zip(state.levels, saved["levels"], strict=True):
        level.copy_(value)
    state.start.copy_(saved["start"])
    average = saved["average"]
    if average is not None and (
        not isinstance(average, torch.Tensor) or average.shape != state.start.shape
    ):
        raise ValueError(
            f"resume: the saved average is not a latent of shape {tuple(state.start.shape)}; "
            "was state.pt edited?"
        )
    state.average = None if average is None else average.to(state.start.device)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.generator.set_state(saved["generator"])
    state.iteration = saved["iteration"]


def _restore_sample(state: SampleState, saved: dict[str, Any]) -> None:
    sample = saved.get("sample")
    if not isinstance(sample, torch.Tensor) or sample.shape != state.sample.shape:
        got = tuple(sample.shape) if isinstance(sample, torch.Tensor) else "no sample"
        raise ValueError(
            f"resume: the saved diffusion sample is {got}, but the run's config builds "
            f"{tuple(state.sample.shape)}; was config.json edited?"
        )
    iteration = saved["iteration"]
    if not isinstance(iteration, int) or not 0 <= iteration <= state.first + 1:
        raise ValueError(f"resume: the saved step {iteration!r} is outside the run's schedule")
    device = state.sample.device
    state.sample = sample.to(device)
    state.pred = None if saved["pred"] is None else saved["pred"].to(device)
    state.start = saved["start"].to(device)
    state.generator.set_state(saved["generator"])
    state.iteration = iteration


@contextlib.contextmanager
def stop_between_steps() -> Iterator[Callable[[], None]]:
    """While the loop runs, the first Ctrl-C stops it after the step under way, so that the
    saved state is whole; a second stops it at once. Yields the check (call it between steps)
    that raises ``KeyboardInterrupt`` once a stop was asked for. Off the main thread, where no
    signal handler can be set, Ctrl-C works as usual.
    """
    asked = threading.Event()

    def check() -> None:
        if asked.is_set():
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        log.warning("stopping after this step (interrupt again to stop at once)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
