"""How many processes share a run, and how they share a step: the interface the loop and the
driver see. This one is a single process; :mod:`vqclip.scale.distributed` hands in its ranks
(torch.distributed) through the same methods, so that neither the loop nor the driver knows
whether, or how, a run is spread."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vqclip.core.config import GenerationConfig

__all__ = ["Processes", "ONE_PROCESS"]


class Processes:
    """One process: it scores every cutout, its sums are its own, it writes."""

    world = 1  # how many processes share each step
    rank = 0  # this one's place among them; rank 0 writes and prints

    def is_main(self) -> bool:
        return self.rank == 0

    def device_name(self, name: str) -> str:
        """The device this process uses for the config's ``device``."""
        return name

    def check(self, config: GenerationConfig) -> None:
        """Raise ``ValueError`` for a config these processes cannot share."""

    def share_from_main(self, read: Callable[[], bytes]) -> bytes:
        """``read()`` on rank 0, its bytes on every rank."""
        return read()

    def my_batches(self, cutn: int, batches: int, device: torch.device) -> list[torch.Tensor]:
        """The cutout indices of the batches this process scores, of the step's ``cutn`` in
        ``batches`` batches."""
        return list(torch.arange(cutn, device=device).tensor_split(batches))

    def sum_(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each tensor summed over the processes, in place."""
        return list(tensors)


ONE_PROCESS = Processes()
