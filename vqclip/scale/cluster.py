"""Ray: joining a cluster, a restyle's frames as tasks on it, and stopping a local instance.

A restyle's frames are independent by design (each frame's run makes the same random draws),
so ``generate(..., remote=on_ray(ADDRESS))`` restyles them as tasks and writes, in order, the frames one
process would write: bit for bit on CPUs with the same threads (Ray gives each task one).
Ray is the engine; vqclip only describes the tasks. Sweeps of many images: :mod:`vqclip.scale.sweep`.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vqclip.core.config import GenerationConfig

__all__ = ["connect", "ray_module", "on_ray", "restyle_on_ray", "stop_local_ray"]


def ray_module() -> Any:
    """The ``ray`` package, or one line saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ValueError("ray: vqclip sweep and --ray need the package 'ray'; pip install 'vqclip[ray]'") from None  # fmt: skip
    return ray


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto", "HOST:PORT" or "ray://HOST:PORT"), or
    start a local instance for ``None``; once per process."""
    ray = ray_module()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)  # fmt: skip


def _restyle_task(config_json: str, pixels: np.ndarray) -> list[np.ndarray]:
    """One frame of a restyle, in a Ray worker: the models built once per worker (cached), the
    loop and its rng as one process's restyle has them before each frame."""
    from vqclip.core.images import to_uint8
    from vqclip.run.build import prepare_loop, resolve_device
    from vqclip.run.restyle import restyle_frame

    config = GenerationConfig.from_json(config_json)
    loop, generator = prepare_loop(config, resolve_device(config.device))
    return [to_uint8(x) for x in restyle_frame(config, loop, generator, pixels)]


def on_ray(address: str) -> Callable[..., Iterator[tuple[int, list[np.ndarray]]]]:
    """Where a restyle's frames go, handed to ``generate(..., remote=)``: the Ray cluster at
    ``address`` ("local": a local instance)."""
    return partial(restyle_on_ray, address=address)


def restyle_on_ray(
    config: GenerationConfig, frames: Iterator[tuple[int, np.ndarray]], address: str
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Each ``(index, pixels)`` frame restyled as a Ray task on the cluster at ``address``
    ("local": a local instance); yields ``(index, images)`` in order, as each is ready, with
    at most twice the cluster's workers' frames in flight (a long video is never all in
    memory)."""
    ray = ray_module()
    connect(None if address == "local" else address)
    resources = ray.cluster_resources()
    gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    window = 2 * max(1, int(resources.get("GPU" if gpus else "CPU", 1)))
    task = ray.remote(_restyle_task).options(
        num_gpus=gpus, num_cpus=0 if gpus else 1, max_retries=2
    )
    text, flight = config.to_json(), collections.deque()
    for index, pixels in frames:
        flight.append((index, task.remote(text, pixels)))
        if len(flight) >= window:
            index, ref = flight.popleft()
            yield index, ray.get(ref)
    for index, ref in flight:
        yield index, ray.get(ref)


def stop_local_ray(temp_dir: str | Path, grace: float = 10.0) -> int:
    """Stop the local Ray instance started with ``ray start --temp-dir TEMP_DIR``, and nothing
    else: the processes whose command line names that folder, with their descendants (Ray's
    agents and workers), asked to end and killed after ``grace`` seconds. ``ray stop --force``
    would end every Ray process of the user on the machine. Returns how many were signalled."""
    mark = str(Path(temp_dir).resolve())
    children: dict[int, list[int]] = collections.defaultdict(list)
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")  # fmt: skip
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile, or not ours to read
        children[parent].append(int(entry.name))
        if mark in command and int(entry.name) != os.getpid():
            roots.append(int(entry.name))
    found, queue = set(), list(roots)
    while queue:
        pid = queue.pop()
        if pid not in found:
            found.add(pid)
            queue.extend(children.get(pid, ()))
    running = found
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the second only to those still running
        for pid in running:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while (running := {pid for pid in running if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.1)
    return len(found)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended and waiting for its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
