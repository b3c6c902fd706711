"""Process-wide speed settings of the fast path: the CPU allocator and the precision ``auto``
picks, by measuring it.

On a CPU, every step of the loop allocates and frees hundreds of megabytes of activations.
glibc hands large blocks straight back to the kernel, so the next step takes them again as fresh
pages, each one a page fault that zeroes 4 KiB: on this project's machine that cost a third of
the VQGAN decoder's time. :func:`keep_freed_memory` tells glibc to keep freed memory for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["keep_freed_memory", "fast_precision", "measure_precision", "Choice"]

# mallopt(3) parameters.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (no mmap per block, no trimming).

    Returns whether it applied (glibc only; elsewhere it is a no-op). Applied once per process.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**30), (_M_TOP_PAD, 2**28))
    return all(mallopt(key, value) == 1 for key, value in settings)


@dataclass(frozen=True)
class Choice:
    """What ``precision="auto"`` picked on a machine, and why."""

    precision: str  # "fp32", "bf16" or "fp16"
    why: str  # one line: the probe's timings, or the rule used where none ran
    seconds: dict[str, float]  # the probe's time per precision (empty where none ran)


_MARGIN = 1.15  # a lower precision must beat fp32 by this much: fp32 is the exact one
_CACHE = "precision.json"


def fast_precision(device: torch.device) -> str:
    """The fastest precision for the decoder and CLIP on ``device``, by :func:`measure_precision`
    (measured once per machine and torch version, then read from the cache)."""
    return measure_precision(device).precision


def measure_precision(device: torch.device, cache_dir: Path | None = None) -> Choice:
    """Time the loop's typical convolution and matrix products in fp32 and bf16 (and fp16 on a
    GPU) and pick the fastest, fp32 unless another is at least 15% faster.

    The result is kept in ``cache_dir/precision.json`` (default ``$VQCLIP_HOME``) under this
    machine's processor, the device and torch's version, so that the probe (about half a second)
    runs once. CPU flags are a poor guide: a CPU with AVX-512 BF16 and no AMX ran the loop 2.5x
    faster in bf16, though an earlier one of that kind ran it slower (docs/performance.md).
    """
    from vqclip.models.registry import cache_dir as default_cache

    path = (cache_dir or default_cache()) / _CACHE
    key = _machine_key(device)
    saved = _read_cache(path).get(key)
    if saved is not None:
        return Choice(saved["precision"], saved["why"] + " (cached)", saved["seconds"])
    choice = _probe(device)
    _write_cache(path, key, choice)
    return choice


def _machine_key(device: torch.device) -> str:
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} sm{''.join(map(str, torch.cuda.get_device_capability(device)))}"  # fmt: skip
    else:
        where = f"{_cpu_model()} {torch.get_num_threads()} threads"
    return f"{device.type} | {where} | torch {torch.__version__} | probe {_PROBE}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _probe(device: torch.device) -> Choice:
    """Time each precision on the probe's work; fp32 unless another is clearly faster."""
    # On a GPU, fp16 only where bf16 is emulated (before compute capability 8.0): where both run
    # fast, bf16 keeps fp32's range, which taming's decoders overflow in fp16.
    low = "bf16"
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        low = "fp16"
    # In alternate rounds, each precision's fastest run: other work on the machine (a test suite,
    # a second generation) slows some runs, and a median taken under it once cached fp32 on a
    # machine where bf16 is 1.7x faster.
    seconds = {"fp32": float("inf"), low: float("inf")}
    for _ in range(_ROUNDS):
        seconds["fp32"] = min(seconds["fp32"], _time_probe(device, "fp32"))
        give_up = _GIVE_UP * seconds["fp32"]
        seconds[low] = min(seconds[low], _time_probe(device, low, give_up=give_up))
        if seconds[low] > give_up:  # emulated: one run says enough
            break
    best = low if seconds[low] * _MARGIN <= seconds["fp32"] else "fp32"
    timings = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in seconds.items())
    why = f"measured on {device.type}: {timings} for the probe; {best} (another must beat fp32 by 15%)"
    return Choice(best, why, seconds)


_PROBE = 2  # the probe's version: a changed probe measures again (1 took a median, not a minimum)
_GIVE_UP = 8.0  # a precision whose first run takes this many times fp32's is emulated: stop
_ROUNDS = 3


def _time_probe(
    device: torch.device, precision: str, repeats: int = 3, give_up: float = float("inf")
) -> float:
    """The fastest time of the probe's work under ``precision``'s autocast: a decoder-like 3x3
    convolution (channels-last, as the loop runs it) and a CLIP-like matrix product, forward
    and backward, a few milliseconds each in fp32. A precision whose warm-up alone takes
    ``give_up`` seconds (emulated, as bf16 is on a CPU without bf16 instructions: 17x slower than
    fp32 on an AVX2-only EPYC) is timed by that run alone."""
    g = torch.Generator(device=device).manual_seed(0)
    image = torch.randn(1, 64, 32, 32, device=device, generator=g)
    image = image.to(memory_format=torch.channels_last).requires_grad_(True)
    kernel = torch.randn(64, 64, 3, 3, device=device, generator=g) * 0.05
    kernel = kernel.to(memory_format=torch.channels_last)
    tokens = torch.randn(200, 512, device=device, generator=g, requires_grad=True)
    weight = torch.randn(1024, 512, device=device, generator=g) * 0.05
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def work() -> float:
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.conv2d(image, kernel, padding=1).float().square().mean()
            loss = loss + F.linear(tokens, weight).float().square().mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    first = work()  # warm-up: kernels chosen, memory allocated
    if first > give_up:
        return first
    return min(work() for _ in range(repeats))


def _read_cache(path: Path) -> dict:
    """The cached choices; an unreadable, oversized or malformed file counts as none."""
    try:
        if path.is_symlink() or path.stat().st_size > 1 << 20:
            return {}
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(values, dict):
        return {}
    return {k: v for k, v in values.items() if _is_choice(v)}


def _is_choice(value: object) -> bool:
    return (
        isinstance(value, dict)
        and value.get("precision") in ("fp32", "bf16", "fp16")
        and isinstance(value.get("why"), str)
        and isinstance(value.get("seconds"), dict)
    )


def _write_cache(path: Path, key: str, choice: Choice) -> None:
    """Add ``choice`` to the cache file, atomically; a cache that cannot be written is skipped."""
    from vqclip.core.files import write_atomic

    values = _read_cache(path)
    values[key] = {"precision": choice.precision, "why": choice.why, "seconds": choice.seconds}
    try:
        os.makedirs(path.parent, exist_ok=True)
        write_atomic(path, json.dumps(values, indent=2).encode())
    except (OSError, ValueError):
        pass
