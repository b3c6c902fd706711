"""``vqclip bench --flow``: what a pair of frames costs a restyle that follows the flow, and
what a frame made in between costs: both flows and the consistency mask, for each built-in
estimator, and RIFE's frame in between (RAFT and RIFE with random weights in their
architectures, which cost what trained ones do)."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch

from vqclip.models.flow import FlowFn, consistent, dis_flow, flows, in_between, load_raft
from vqclip.models.rife import IFNet, load_rife
from vqclip.run.build import resolve_device

__all__ = ["run_flow_benchmark", "format_flow_table"]


def _seconds(work: Any, device: torch.device, repeats: int) -> float:
    work()  # warm-up: RAFT's first call allocates, DIS builds its pyramid
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def _pair(estimate: FlowFn, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return consistent(*flows(estimate, a, b))


def run_flow_benchmark(quick: bool = False, device: str | None = None) -> dict[str, Any]:
    """Seconds per pair of frames (both flows and the mask) and per frame made in between, by
    estimator and size (RIFE makes frames, not flows: no pair)."""
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_large, raft_small

    dev = resolve_device(device or "auto")
    sizes, repeats = ((128,), 1) if quick else ((256, 512), 3)
    rows = []
    with TemporaryDirectory() as folder:
        torch.manual_seed(0)
        estimators: dict[str, FlowFn] = {"dis": dis_flow}
        for name, build in (("raft_small", raft_small), ("raft_large", raft_large)):
            path = Path(folder) / f"{name}.pth"
            torch.save(build(weights=None).state_dict(), path)  # torchvision's format
            estimators[name] = load_raft(path, name == "raft_large", dev)
        save_file(IFNet().state_dict(), Path(folder) / "rife.safetensors")  # the Hub's format
        rife = load_rife(Path(folder) / "rife.safetensors", dev)
        for size in sizes:
            g = torch.Generator().manual_seed(size)
            a, b = (torch.rand(1, 3, size, size, generator=g).to(dev) for _ in range(2))
            for name, estimate in estimators.items():
                pair = _seconds(partial(_pair, estimate, a, b), dev, repeats)
                tween = _seconds(partial(in_between, a, b, [0.5], estimate), dev, repeats)
                rows.append({"estimator": name, "size": size, "pair_s": pair, "in_between_s": tween})  # fmt: skip
            tween = _seconds(partial(rife, a, b, [0.5]), dev, repeats)
            rows.append({"estimator": "rife", "size": size, "pair_s": None, "in_between_s": tween})
    return {
        "device": dev.type if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }


def format_flow_table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['device']} ({results['threads']} threads), torch {results['torch']}",
        "| estimator | size | both flows and the mask, s | a frame in between, s |",
        "|---|---|---|---|",
    ]
    for row in results["rows"]:
        pair = "-" if row["pair_s"] is None else f"{row['pair_s']:.2f}"
        lines.append(f"| {row['estimator']} | {row['size']}² | {pair} | {row['in_between_s']:.2f} |")  # fmt: skip
    return "\n".join(lines)
