"""Process-wide speed settings of the fast path: the CPU allocator and the default precision.

On a CPU, every step of the loop allocates and frees hundreds of megabytes of activations.
glibc hands large blocks straight back to the kernel, so the next step takes them again as fresh
pages, each one a page fault that zeroes 4 KiB: on this project's machine that cost a third of
the VQGAN decoder's time. :func:`keep_freed_memory` tells glibc to keep freed memory for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import torch

__all__ = ["keep_freed_memory", "fast_precision", "cpu_flags"]

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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_precision(device: torch.device) -> str:
    """The fastest precision for the decoder and CLIP on ``device``.

    On a GPU, bf16 where its tensor cores have it (compute capability 8.0 and later: A100, H100,
    RTX 30xx on), as fast as fp16 there and with fp32's range; fp16 on older GPUs (T4, V100),
    whose bf16 is emulated. fp16's range (65504) is what decoders of taming's design are known to
    overflow (Stable Diffusion's autoencoder, built from taming's blocks, makes NaNs in fp16),
    and taming's attention scales its query-key products only after the product. On a
    CPU, bf16 only with AMX tiles: without them (AVX-512 BF16 alone, as on an earlier machine of
    this project) oneDNN's bf16 matrix products ran at 0.6x the fp32 speed.
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    return "bf16" if "amx_bf16" in cpu_flags() else "fp32"
