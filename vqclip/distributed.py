"""One image across processes with ``torch.distributed``, as ``torchrun`` launches them.

Every process builds the same models and the same state from rank 0's resolved config (its
seed, its measured precision), draws the same cutouts and augmentations, and scores its share of
them (an even split of the step's cutouts, then ``cutn_batches`` within it); the pulls are
shared out evenly too. The gradients are summed across processes (one all-reduce a step), so
every process takes the same step and holds the same parameters: the result is the
single-process one up to the order in which the reduction adds floats. Rank 0 alone writes
frames, state, final images and videos, and prints. gloo on CPUs, NCCL on GPUs (one GPU per
process, ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from vqclip.config import GenerationConfig

__all__ = ["start", "world", "rank", "is_main", "device_name", "from_main", "check", "my_batches"]
__all__ += ["sum_", "share_from_main"]


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str = "auto") -> None:
    """Join the process group the launcher's environment describes, once; nothing outside one.
    NCCL when the processes use GPUs, else gloo."""
    if dist.is_initialized() or not launched():
        return
    gpu = device != "cpu" and torch.cuda.is_available() and dist.is_nccl_available()
    if gpu:  # NCCL works on the current device: each process its own
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if gpu else "gloo")


def world() -> int:
    """How many processes share each step (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes and prints: rank 0, or the only one."""
    return rank() == 0


def device_name(name: str) -> str:
    """The device this process uses for ``name``: with several processes on CUDA, each its own
    GPU, ``cuda:LOCAL_RANK``."""
    if world() > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return name


def from_main(resolve: Callable[[], GenerationConfig]) -> GenerationConfig:
    """``resolve()`` on rank 0, its result on every rank: sent as the config's JSON bytes
    (nothing unpickled), so that each rank runs with rank 0's seed and precision."""
    from vqclip.config import GenerationConfig

    data = share_from_main(lambda: resolve().to_json().encode())
    return GenerationConfig.from_json(data.decode())


def share_from_main(read: Callable[[], bytes]) -> bytes:
    """``read()`` on rank 0, its bytes on every rank; if it raises, every rank raises a
    ``ValueError`` with its message (rank 0 its own error), so that no rank waits for a
    broadcast that will never come or goes on with what it read itself."""
    if world() == 1:
        return read()
    device, error = _wire(), None
    if is_main():
        try:
            data = read()
        except Exception as failure:  # every rank must hear of it; re-raised below
            error, data = failure, str(failure).encode()
        head = torch.tensor([len(data), error is not None], dtype=torch.int64, device=device)
    else:
        head = torch.zeros(2, dtype=torch.int64, device=device)
    dist.broadcast(head, 0)
    payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if is_main() and len(data) else torch.empty(int(head[0]), dtype=torch.uint8, device=device)  # fmt: skip
    if int(head[0]):
        dist.broadcast(payload, 0)
    if error is not None:
        raise error
    received = bytes(payload.cpu().numpy().tobytes())
    if int(head[1]):
        raise ValueError(f"rank 0: {received.decode(errors='replace')}")
    return received


def _wire() -> torch.device:
    """Where collective tensors live: NCCL moves only CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check(config: GenerationConfig) -> None:
    """Raise ``ValueError`` for what several processes do not yet share: the steps of a
    diffusion sample and the frames of a restyle."""
    if world() == 1:
        return
    if config.generator == "diffusion":
        raise ValueError(
            f"generator: 'diffusion' runs in one process; torchrun started {world()} (expected "
            "generator vqgan or pixels)"
        )
    if config.init_video:
        raise ValueError(
            f"init_video: a restyle runs in one process; torchrun started {world()} (its frames "
            "go on a Ray cluster with --ray, or one process each)"
        )
    if config.cutn < world():
        raise ValueError(
            f"cutn: {config.cutn} cutouts cannot be shared among {world()} processes; "
            f"expected at least {world()}"
        )


def my_batches(cutn: int, batches: int, device: torch.device) -> list[torch.Tensor]:
    """The cutout indices of the batches this process scores: the step's ``cutn`` cutouts in
    ``batches`` batches, rounded up to a multiple of the processes, each taking its run of
    them; one process alone takes them all."""
    total = -(-batches // world()) * world()
    split = torch.arange(cutn, device=device).tensor_split(total)
    share = total // world()
    return list(split[rank() * share : (rank() + 1) * share])


def sum_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over the processes (one all-reduce of them all), in place where
    they are tensors of their own, and returned."""
    flat = torch.cat([t.detach().flatten() for t in tensors])
    dist.all_reduce(flat)
    parts = flat.split([t.numel() for t in tensors])
    for tensor, part in zip(tensors, parts, strict=True):
        tensor.detach().copy_(part.view_as(tensor))
    return list(tensors)
