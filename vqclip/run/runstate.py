"""A run's loop state on disk, so that a stopped run goes on exactly where it stopped.

``RUN_DIR/state.pt`` holds what :class:`vqclip.loop.optimise.LoopState` holds: the latent's levels,
the starting latent, the optimiser's state, the rng's state and the iteration (or, for a
diffusion sample, :class:`vqclip.loop.diffusion.SampleState`'s), as plain tensors and numbers (read back with the weights-only unpickler, so it cannot run code). The
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

from vqclip.core.files import write_atomic
from vqclip.core.limits import MAX_STEPS
from vqclip.loop.diffusion import SampleState
from vqclip.loop.optimise import LoopState
from vqclip.models.checkpoints import load_checkpoint

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
            "generator": state.rng.get_state(),
        }
    else:
        saved = {
            "iteration": state.iteration,
            "levels": [level.detach().cpu() for level in state.levels],
            "start": state.start.cpu(),
            "optimizer": state.optimizer.state_dict(),
            "generator": state.rng.get_state(),
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
    for key, (kinds, expected) in _FIELDS.items():
        if key in saved and not _is(saved[key], kinds):
            raise ValueError(f"resume: {path}: {key} is {_kind(saved[key])}; expected {expected}")
    iteration = saved["iteration"]
    if isinstance(iteration, bool) or not 0 <= iteration <= MAX_STEPS:
        raise ValueError(f"resume: {path}: iteration {iteration} is outside 0 to {MAX_STEPS}")
    if "levels" in saved and not 1 <= len(saved["levels"]) <= 8:
        raise ValueError(f"resume: {path}: {len(saved['levels'])} latent levels; expected 1 to 8")
    if not all(isinstance(x, torch.Tensor) and x.is_floating_point() for x in saved.get("levels", [])):  # fmt: skip
        raise ValueError(f"resume: {path}: levels holds something other than float tensors")
    return saved


# What each saved field must be, so that a crafted state.pt is refused before it is used
# (an iteration of -5 or "7" would have moved the run's frames aside, or named files by it).
_TENSOR, _NONE = (torch.Tensor,), (type(None),)
_FIELDS = {
    "iteration": ((int,), "an integer"),
    "levels": ((list,), "a list of tensors"),
    "start": (_TENSOR, "a tensor"),
    "sample": (_TENSOR, "a tensor"),
    "pred": (_TENSOR + _NONE, "a tensor or None"),
    "average": (_TENSOR + _NONE, "a tensor or None"),
    "optimizer": ((dict,), "an optimizer's state dict"),
    "generator": (_TENSOR, "a torch.Generator's state (a byte tensor)"),
}


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _kind(value: Any) -> str:
    return type(value).__name__


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
    if saved["start"].shape != state.start.shape:
        raise ValueError(f"resume: the saved starting latent is {tuple(saved['start'].shape)}, not {tuple(state.start.shape)}; was state.pt edited?")  # fmt: skip
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
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
        state.rng.set_state(saved["generator"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        detail = " ".join(str(error).split())[:200]
        raise ValueError(f"resume: the saved optimizer or generator state does not fit the run ({detail}); was state.pt edited?") from None  # fmt: skip
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
    pred = saved["pred"]
    if saved["start"].shape != state.start.shape or (pred is not None and pred.shape != sample.shape):  # fmt: skip
        raise ValueError("resume: the saved start or estimate does not fit the run's sample; was state.pt edited?")  # fmt: skip
    device = state.sample.device
    state.sample = sample.to(device)
    state.pred = None if saved["pred"] is None else saved["pred"].to(device)
    state.start = saved["start"].to(device)
    try:
        state.rng.set_state(saved["generator"])
    except (TypeError, RuntimeError) as error:
        raise ValueError(f"resume: the saved generator state does not fit ({' '.join(str(error).split())[:200]})") from None  # fmt: skip
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
