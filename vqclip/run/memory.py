"""How much memory a generation needs, estimated from the VQGAN's shape before any model is
built, so that a size the machine cannot hold is refused at once, not after minutes with an
allocator's traceback.

The estimate counts what the decoder keeps for the backward pass (the dominant term: it grows
with the pixels) and the mid-block attention over the latent's cells; it leaves out CLIP (bounded
by ``cutn``) and the weights, so it errs low and refuses only sizes that cannot fit.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["estimate_bytes", "device_memory", "check_memory"]

_FLOAT = 4  # bytes: fp32 activations (autocast keeps some in fp32 too)
_SAVED_PER_RESBLOCK = 6  # tensors a ResnetBlock keeps for backward: norm, swish, conv, twice


def estimate_bytes(ddconfig: dict[str, Any] | None, width: int, height: int, images: int) -> int:
    """Bytes the decoder holds for one step on ``images`` images of ``width`` x ``height``;
    with no decoder (``None``: the pixels generator), the image, its gradient and Adam's two
    moments, with room for the upsampled copy."""
    if ddconfig is None:
        return width * height * 3 * 8 * _FLOAT * images
    levels = len(ddconfig["ch_mult"])
    factor = 2 ** (levels - 1)
    h, w = height // factor, width // factor  # the latent's cells
    cells = h * w
    total = 0
    for level in range(levels):  # latent resolution first, as the decoder runs
        pixels = cells * 4**level
        channels = ddconfig["ch"] * ddconfig["ch_mult"][levels - 1 - level]
        blocks = ddconfig["num_res_blocks"] + 1 + (2 if level == 0 else 0)  # + the mid blocks
        total += pixels * channels * blocks * _SAVED_PER_RESBLOCK
    total += 2 * cells * cells  # the mid block's attention weights, and their gradient
    return total * _FLOAT * images


def device_memory(device: torch.device) -> int | None:
    """The memory of ``device`` in bytes (a GPU's, or the machine's RAM within any cgroup
    limit), or None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return min(total, _cgroup_limit() or total)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()  # noqa: SIM115
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def check_memory(
    ddconfig: dict[str, Any] | None, width: int, height: int, images: int, device: torch.device
) -> None:
    """Raise ``ValueError`` naming the size, the estimate and the memory if it cannot fit."""
    need, have = estimate_bytes(ddconfig, width, height, images), device_memory(device)
    if have is not None and need > have:
        where = "this GPU" if device.type == "cuda" else "this machine"
        raise ValueError(
            f"width, height: {width}x{height} x {images} image(s) needs about {need / 2**30:.1f} "
            f"GiB, but {where} has {have / 2**30:.1f} GiB; expected a smaller size or batch "
            "(or upscale a smaller image)"
        )
