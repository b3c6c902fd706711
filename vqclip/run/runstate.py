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

__all__ = ["STATE", "save_state", "read_state", "stop_between_steps"]

log = logging.getLogger(__name__)

STATE = "state.pt"
_KEYS = {"iteration", "levels", "start", "optimizer", "generator", "average"}
_SAMPLE_KEYS = {"iteration", "sample", "pred", "start", "generator"}


def save_state(state: LoopState | SampleState, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
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
