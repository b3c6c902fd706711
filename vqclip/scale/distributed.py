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

import torch
import torch.distributed as dist

from vqclip.core.config import GenerationConfig
from vqclip.loop.processes import ONE_PROCESS, Processes

__all__ = ["launched", "join", "Ranks"]


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: str = "auto") -> Processes:
    """The processes the launcher's environment describes, their group joined once (NCCL when
    they use GPUs, else gloo); outside a launcher, the one process. The CLI calls it under
    torchrun; a Python script launched so hands the result to ``generate(..., processes=)``."""
    if not launched():
        return ONE_PROCESS
    if not dist.is_initialized():
        gpu = device != "cpu" and torch.cuda.is_available() and dist.is_nccl_available()
        if gpu:  # NCCL works on the current device: each process its own
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpu else "gloo")
    return Ranks()


class Ranks(Processes):
    """The torch.distributed processes of a joined group."""

    def __init__(self, world: int | None = None, rank: int | None = None) -> None:
        """The joined group's size and this process's rank (given: a process of such a group)."""
        self.world = dist.get_world_size() if world is None else world
        self.rank = dist.get_rank() if rank is None else rank

    def device_name(self, name: str) -> str:
        """With several processes on CUDA, each its own GPU, ``cuda:LOCAL_RANK``."""
        if self.world > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        return name

    def share_from_main(self, read: Callable[[], bytes]) -> bytes:
        """If ``read()`` raises on rank 0, every rank raises a ``ValueError`` with its message
        (rank 0 its own error), so that no rank waits for a broadcast that will never come or
        goes on with what it read itself."""
        device, error = _wire(), None
        if self.is_main():
            try:
                data = read()
            except Exception as failure:  # every rank must hear of it; re-raised below
                error, data = failure, str(failure).encode()
            head = torch.tensor([len(data), error is not None], dtype=torch.int64, device=device)
        else:
            head = torch.zeros(2, dtype=torch.int64, device=device)
        dist.broadcast(head, 0)
        payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if self.is_main() and len(data) else torch.empty(int(head[0]), dtype=torch.uint8, device=device)  # fmt: skip
        if int(head[0]):
            dist.broadcast(payload, 0)
        if error is not None:
            raise error
        received = bytes(payload.cpu().numpy().tobytes())
        if int(head[1]):
            raise ValueError(f"rank 0: {received.decode(errors='replace')}")
        return received

    def check(self, config: GenerationConfig) -> None:
        """What several processes do not yet share: the steps of a diffusion sample and the
        frames of a restyle."""
        if self.world == 1:
            return
        if config.generator == "diffusion":
            raise ValueError(
                f"generator: 'diffusion' runs in one process; torchrun started {self.world} "
                "(expected generator vqgan or pixels)"
            )
        if config.init_video:
            raise ValueError(
                f"init_video: a restyle runs in one process; torchrun started {self.world} (its "
                "frames go on a Ray cluster with --ray, or one process each)"
            )
        if config.has_regions():
            raise ValueError(f"prompts: prompts in regions run in one process; torchrun started {self.world}")  # fmt: skip
        if config.color_coherence != "none":  # frame 0, kept from its PNG, is rank 0's alone
            raise ValueError(f"color_coherence: an animation that keeps frame 0's colours runs in one process; torchrun started {self.world}")  # fmt: skip
        if config.cutn < self.world:
            raise ValueError(
                f"cutn: {config.cutn} cutouts cannot be shared among {self.world} processes; "
                f"expected at least {self.world}"
            )

    def my_batches(self, cutn: int, batches: int, device: torch.device) -> list[torch.Tensor]:
        """The step's batches rounded up to a multiple of the processes, each process taking
        its run of them."""
        total = -(-batches // self.world) * self.world
        split = torch.arange(cutn, device=device).tensor_split(total)
        share = total // self.world
        return list(split[self.rank * share : (self.rank + 1) * share])

    def sum_(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """One all-reduce of them all, copied back into each."""
        flat = torch.cat([t.detach().flatten() for t in tensors])
        dist.all_reduce(flat)
        parts = flat.split([t.numel() for t in tensors])
        for tensor, part in zip(tensors, parts, strict=True):
            tensor.detach().copy_(part.view_as(tensor))
        return list(tensors)


def _wire() -> torch.device:
    """Where collective tensors live: NCCL moves only CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
