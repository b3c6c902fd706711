"""The benchmark: vqclip's loop beside a faithful classic loop, on the real architectures.

Both loops run on the same randomly initialised VQGAN imagenet f16-16384 (taming modules) and
CLIP ViT-B/32 (``clip.model.CLIP``): the arithmetic of the real models, no download. Each full
iteration (decode, cutouts, augmentations, CLIP, loss, backward, step) is timed after a warm-up;
the median of several is reported with peak memory.

The classic loop is the one of the original notebooks: a Python loop over cutouts, each cropped
at an integer offset and resampled with its own Lanczos kernel then bicubic interpolation; fp32
throughout; the loss read back to the host and a PNG frame written every step; taming's swish
as taming wrote it, CLIP as published, kornia's stock colour jitter and glibc's default
allocator (vqclip's process settings and :func:`~vqclip.models.vqgan_clip.prepare_for_loop` are applied
only after every classic case has been timed).
"""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vqclip.core.images import to_uint8
from vqclip.loop.cutouts import make_augments
from vqclip.loop.embeddings import embed_texts
from vqclip.loop.generators import VQGANGenerator
from vqclip.loop.latents import decode_latent, random_latent
from vqclip.loop.losses import Targets, prompt_losses
from vqclip.loop.objective import Objective, PromptTerm
from vqclip.loop.optimise import Cuts, Loop, start_state, step
from vqclip.loop.perceptors import Perceptor, normalize
from vqclip.models.tuning import keep_freed_memory, measure_precision
from vqclip.models.vqgan_clip import (
    VQ_TARGET,
    VQGAN,
    VQGANSpec,
    build_clip,
    build_vqgan,
    compile_for_loop,
    prepare_for_loop,
)
from vqclip.run.build import resolve_device

__all__ = [
    "run_benchmark", "format_table", "run_batches_benchmark", "format_batches_table",
    "run_diffusion_benchmark", "format_diffusion_table", "F16_16384", "VIT_B_32", "RN50",
]  # fmt: skip

F16_16384 = VQGANSpec(
    target=VQ_TARGET,
    ddconfig={
        "double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
        "dropout": 0.0,
    },
    n_embed=16384,
    embed_dim=256,
    gumbel=False,
    prefix="",
)  # fmt: skip
VIT_B_32 = {
    "embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768,
    "vision_patch_size": 32, "context_length": 77, "vocab_size": 49408,
    "transformer_width": 512, "transformer_heads": 8, "transformer_layers": 12,
}  # fmt: skip
RN50 = {
    "embed_dim": 1024, "image_resolution": 224, "vision_layers": (3, 4, 6, 3), "vision_width": 64,
    "vision_patch_size": None, "context_length": 77, "vocab_size": 49408,
    "transformer_width": 512, "transformer_heads": 8, "transformer_layers": 12,
}  # fmt: skip
AUGMENTS = ("Af", "Pe", "Ji", "Er")
PROMPT = "a lighthouse in a storm"


# --- the classic loop ------------------------------------------------------------------------


def _lanczos_kernel(ratio: float, a: int = 2) -> torch.Tensor:
    """A normalised Lanczos-a kernel for downsampling by ``ratio`` (< 1)."""
    half = math.ceil(a / ratio)
    x = torch.arange(-half + 1, half, dtype=torch.float32) * ratio  # taps in output units
    sinc = lambda t: torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))  # noqa: E731
    kernel = torch.where(x.abs() < a, sinc(x) * sinc(x / a), torch.zeros_like(x))
    return kernel / kernel.sum()


def _classic_resample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-alias each axis with its own Lanczos kernel, then bicubic resize (classic cutouts)."""
    n, c, h, w = image.shape
    x = image.reshape(n * c, 1, h, w)
    if size < h:
        k = _lanczos_kernel(size / h).to(x)
        x = F.conv2d(F.pad(x, (0, 0, len(k) // 2, len(k) // 2), "reflect"), k.view(1, 1, -1, 1))
    if size < w:
        k = _lanczos_kernel(size / w).to(x)
        x = F.conv2d(F.pad(x, (len(k) // 2, len(k) // 2, 0, 0), "reflect"), k.view(1, 1, 1, -1))
    x = x.reshape(n, c, x.shape[-2], x.shape[-1])
    return F.interpolate(x, (size, size), mode="bicubic", align_corners=True)


def _classic_cutouts(
    image: torch.Tensor, cut_size: int, cutn: int, cut_pow: float = 1.0
) -> torch.Tensor:
    side_y, side_x = image.shape[2:]
    max_size, min_size = min(side_x, side_y), min(side_x, side_y, cut_size)
    cutouts = []
    for _ in range(cutn):  # one crop and one resampling per cutout, sizes read back to the host
        size = int(torch.rand([]) ** cut_pow * (max_size - min_size) + min_size)
        x0 = int(torch.randint(0, side_x - size + 1, ()))
        y0 = int(torch.randint(0, side_y - size + 1, ()))
        cutouts.append(_classic_resample(image[:, :, y0 : y0 + size, x0 : x0 + size], cut_size))
    return torch.cat(cutouts)


def _classic_step(vqgan: VQGAN, clip_model: Any, targets: Targets, latent: torch.Tensor, optimizer: Any, augments: Any, cutn: int, frame: Path) -> float:  # fmt: skip
    image = decode_latent(vqgan, latent)
    cutouts = _classic_cutouts(image, clip_model.visual.input_resolution, cutn)
    cutouts = augments(cutouts)
    facs = cutouts.new_empty([cutn, 1, 1, 1]).uniform_(0, 0.1)
    cutouts = cutouts + facs * torch.randn_like(cutouts)
    embeds = clip_model.encode_image(normalize(cutouts)).float()
    loss = prompt_losses(embeds, targets).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        low, high = vqgan.codebook.min(0).values, vqgan.codebook.max(0).values
        latent.copy_(latent.maximum(low.view(1, -1, 1, 1)).minimum(high.view(1, -1, 1, 1)))
    from PIL import Image

    Image.fromarray(to_uint8(image[0])).save(frame)  # the classic notebook saves every step
    return loss.item()


# --- timing ----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(run: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds per call after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory since :func:`_reset_peak`: CUDA allocations, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    return None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # Linux: "5" resets the peak RSS to the current RSS
        Path("/proc/self/clear_refs").write_text("5")


@dataclass(frozen=True)
class _Setup:
    vqgan: VQGAN
    clip_model: Any
    targets: Targets | None
    device: torch.device
    warmup: int
    repeats: int


def _start(setup: _Setup, size: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator(device=setup.device).manual_seed(0)
    f = setup.vqgan.spec.factor
    return random_latent(setup.vqgan.codebook, batch, size // f, size // f, g)


def _time_classic(setup: _Setup, size: int, cutn: int) -> dict[str, float | None]:
    """The classic loop, as its users run it: taming's own swish, CLIP as published, kornia's
    stock colour jitter, glibc's default allocator."""
    latent = _start(setup, size).requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=0.1)
    augments = make_augments(AUGMENTS, setup.clip_model.visual.input_resolution, fast=False)
    with tempfile.TemporaryDirectory() as tmp:
        run = functools.partial(
            _classic_step, setup.vqgan, setup.clip_model, setup.targets, latent,
            optimizer, augments, cutn, Path(tmp) / "progress.png",
        )  # fmt: skip
        _reset_peak(setup.device)
        seconds = _time(run, setup.device, setup.warmup, setup.repeats)
        return {"classic_s": seconds, "classic_peak_mb": _peak_memory_mb(setup.device)}


def _time_fast(
    setup: _Setup, size: int, cutn: int, precision: str, batch: int
) -> dict[str, float | None]:
    """vqclip's loop on one image and on ``batch`` images."""
    vqgan = setup.vqgan
    augments = make_augments(AUGMENTS, setup.clip_model.visual.input_resolution)
    row: dict[str, float | None] = {}
    for name, batch_size in (("fast", 1), ("fast_batch", batch)):
        objective = Objective(PromptTerm(targets=(setup.targets,)))
        perceptor = Perceptor(setup.clip_model)
        cuts = Cuts((augments,), cutn)
        loop = Loop(VQGANGenerator(vqgan), (perceptor,), objective, cuts, 0, precision)
        g = torch.Generator(device=setup.device).manual_seed(0)
        state = start_state(_start(setup, size, batch_size), "Adam", 0.1, g)
        _reset_peak(setup.device)
        run = functools.partial(step, loop, state)
        row[f"{name}_s"] = _time(run, setup.device, setup.warmup, setup.repeats)
        row[f"{name}_peak_mb"] = _peak_memory_mb(setup.device)
    return row


def run_benchmark(
    quick: bool = False,
    device: str | None = None,
    precision: str | None = None,
    compile_: bool = False,
    cases: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Time both loops; ``quick`` uses tiny models and one repeat (for smoke tests).

    Every classic case runs first, in the process as a classic user has it; then vqclip's
    process settings (:mod:`vqclip.models.tuning`) are applied and vqclip's loop is timed.
    """
    dev = resolve_device(device or "auto")
    choice = "given"
    if precision in (None, "auto"):
        picked = measure_precision(dev)
        precision, choice = picked.precision, f"auto: {picked.why}"
    torch.manual_seed(0)
    if quick:
        from vqclip.shapes.train import CLIP_SHAPE, VQGAN_SPEC

        vqgan, clip_model = build_vqgan(VQGAN_SPEC), build_clip(**CLIP_SHAPE)
        cases = cases or [(64, 4)]
    else:
        vqgan, clip_model = build_vqgan(F16_16384), build_clip(**VIT_B_32)
        default = [(256, 32), (256, 64)] + ([(512, 32), (512, 64)] if dev.type == "cuda" else [])
        cases = cases or default
    vqgan = vqgan.eval().requires_grad_(False).to(dev)
    clip_model = clip_model.eval().requires_grad_(False).to(dev)
    targets = _targets(Perceptor(clip_model), dev)
    warmup, repeats, batch = (1, 1, 2) if quick else (1, 3, 4)
    setup = _Setup(vqgan, clip_model, targets, dev, warmup, repeats)
    rows = [
        {"size": size, "cutn": cutn, **_time_classic(setup, size, cutn)} for size, cutn in cases
    ]
    if dev.type == "cpu":
        keep_freed_memory()
    prepare_for_loop(vqgan, clip_model)
    if compile_:
        compile_for_loop(vqgan, clip_model)
    for row in rows:
        row.update(_time_fast(setup, row["size"], row["cutn"], precision, batch))
        row["batch"] = batch
        row["speedup"] = row["classic_s"] / row["fast_s"]
        row["images_per_hour_100it"] = 3600 / (row["fast_batch_s"] / batch * 100)
        row["classic_images_per_hour_100it"] = 3600 / (row["classic_s"] * 100)
    return {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "models": "tiny shapes models"
        if quick
        else "VQGAN imagenet f16-16384 + CLIP ViT-B/32, random weights",
        "precision": precision,
        "precision_choice": choice,
        "compile": compile_,
        "torch": torch.__version__,
        "rows": rows,
    }


def format_table(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`run_benchmark` results."""
    lines = [
        f"{results['models']} on {results['device']}; fast path: {results['precision']}"
        f"{', torch.compile' if results['compile'] else ''}; torch {results['torch']}",
        f"precision: {results['precision_choice']}",
        "",
        "| size | cutn | classic it/s | vqclip it/s | speed-up | vqclip batch it/s (imgs) | images/hour @100 it (classic → vqclip batch) | peak MB (classic / vqclip) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        peak = (
            f"{r['classic_peak_mb']:.0f} / {r['fast_peak_mb']:.0f}" if r["fast_peak_mb"] else "n/a"
        )
        lines.append(
            f"| {r['size']}² | {r['cutn']} | {1 / r['classic_s']:.3f} | {1 / r['fast_s']:.3f} | "
            f"{r['speedup']:.2f}× | {1 / r['fast_batch_s']:.3f} ({r['batch']}) | "
            f"{r['classic_images_per_hour_100it']:.1f} → {r['images_per_hour_100it']:.1f} | {peak} |"
        )
    return "\n".join(lines)


# --- cutout batches and ensembles ------------------------------------------------------------


def _targets(perceptor: Perceptor, device: torch.device) -> Targets:
    text = embed_texts(perceptor, [PROMPT])
    return Targets(text, torch.zeros(1, dtype=torch.long, device=device), torch.ones(1, device=device),
                   torch.full((1,), -math.inf, device=device), (PROMPT,))  # fmt: skip


def _time_loop(
    setup: _Setup,
    perceptors: tuple[Perceptor, ...],
    size: int,
    cutn: int,
    batches: int,
    precision: str,
) -> dict[str, float | None]:
    """vqclip's loop with these perceptors (equal weights) and cutout batches: s/it, peak MB."""
    targets = tuple(_targets(p, setup.device) for p in perceptors)
    weights = (1.0,) * len(perceptors)
    objective = Objective(PromptTerm(targets=targets, weights=weights, names=("a", "b")[: len(perceptors)]))  # fmt: skip
    augments = tuple(make_augments(AUGMENTS, p.input_resolution) for p in perceptors)
    loop = Loop(VQGANGenerator(setup.vqgan), perceptors, objective, Cuts(augments, cutn, batches=batches), 0, precision)  # fmt: skip
    g = torch.Generator(device=setup.device).manual_seed(0)
    state = start_state(_start(setup, size), "Adam", 0.1, g)
    _reset_peak(setup.device)
    seconds = _time(functools.partial(step, loop, state), setup.device, setup.warmup, setup.repeats)
    return {"s": seconds, "peak_mb": _peak_memory_mb(setup.device)}


def run_batches_benchmark(
    quick: bool = False, device: str | None = None, precision: str | None = None
) -> dict[str, Any]:
    """Speed and peak memory of vqclip's loop at 256² for cutn 64 and 128 in 1, 2 and 4 cutout
    batches, and of a two-model ensemble (ViT-B/32 + RN50, random weights) at cutn 64. On a CPU
    the peak is the process's resident memory, with glibc's default allocator."""
    dev = resolve_device(device or "auto")
    if precision in (None, "auto"):
        precision = measure_precision(dev).precision
    torch.manual_seed(0)
    if quick:
        from vqclip.shapes.train import CLIP_SHAPE, CLIP_VIT_SHAPE, VQGAN_SPEC

        vqgan, clips = build_vqgan(VQGAN_SPEC), [build_clip(**CLIP_VIT_SHAPE), build_clip(**CLIP_SHAPE)]  # fmt: skip
        size, cutns, warmup, repeats = 64, (4, 8), 1, 1
    else:
        vqgan, clips = build_vqgan(F16_16384), [build_clip(**VIT_B_32), build_clip(**RN50)]
        size, cutns, warmup, repeats = 256, (64, 128), 1, 3
    vqgan = vqgan.eval().requires_grad_(False).to(dev)
    clips = [c.eval().requires_grad_(False).to(dev) for c in clips]
    # glibc's default allocator here (no keep_freed_memory): it hands large blocks back at
    # once, so that a CPU's peak RSS after a reset measures each case, not the largest before.
    for clip_model in clips:
        prepare_for_loop(None, clip_model)
    prepare_for_loop(vqgan, None)
    setup = _Setup(vqgan, clips[0], None, dev, warmup, repeats)
    first, second = (Perceptor(c) for c in clips)
    rows = [
        {"models": 1, "cutn": cutn, "batches": n, **_time_loop(setup, (first,), size, cutn, n, precision)}
        for cutn in cutns
        for n in (1, 2, 4)
    ]  # fmt: skip
    cutn = cutns[0]
    rows.append({"models": 2, "cutn": cutn, "batches": 1, **_time_loop(setup, (first, second), size, cutn, 1, precision)})  # fmt: skip
    rows.append({"models": 2, "cutn": cutn, "batches": 2, **_time_loop(setup, (first, second), size, cutn, 2, precision)})  # fmt: skip
    return {
        "device": dev.type if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "models": "tiny shapes models"
        if quick
        else "VQGAN f16-16384 + CLIP ViT-B/32 (+ RN50), random weights",  # fmt: skip
        "size": size,
        "precision": precision,
        "torch": torch.__version__,
        "rows": rows,
    }


def format_batches_table(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`run_batches_benchmark` results."""
    lines = [
        f"{results['models']} at {results['size']}² on {results['device']}; {results['precision']}; torch {results['torch']}",  # fmt: skip
        "",
        "| CLIPs | cutn | cutn_batches | vqclip it/s | peak MB |",
        "|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] else "n/a"
        clips = "ViT-B/32" if r["models"] == 1 else "ViT-B/32 + RN50"
        if results["models"].startswith("tiny"):
            clips = f"{r['models']} tiny"
        lines.append(f"| {clips} | {r['cutn']} | {r['batches']} | {1 / r['s']:.3f} | {peak} |")
    return "\n".join(lines)


# --- CLIP-guided diffusion -------------------------------------------------------------------


def run_diffusion_benchmark(
    quick: bool = False, device: str | None = None, precision: str | None = None
) -> dict[str, Any]:
    """Time one guided sampling step (U-Net forward and backward, cutouts, CLIP, the pulls) of
    OpenAI's 256x256 unconditional architecture (random weights) under CLIP ViT-B/32 guidance
    at 256², for cutn 16 and 32: what each of a sample's 250 steps costs."""
    from vqclip.loop.diffusion import Sampler, clip_guidance
    from vqclip.loop.objective import RangeTerm, SmoothnessTerm
    from vqclip.models import registry
    from vqclip.models.unet import UNet, UNetSpec

    dev = resolve_device(device or "auto")
    if precision in (None, "auto"):
        precision = measure_precision(dev).precision
    torch.manual_seed(0)
    if quick:
        from vqclip.shapes.train import CLIP_SHAPE, DIFFUSION_SPEC

        spec, clip_model, cutns, warmup, repeats = DIFFUSION_SPEC, build_clip(**CLIP_SHAPE), (4, 8), 1, 1  # fmt: skip
    else:
        spec = UNetSpec.from_dict(registry.registry()["256x256_diffusion_uncond"].flags)
        clip_model, cutns, warmup, repeats = build_clip(**VIT_B_32), (16, 32), 1, 1
    unet = UNet(spec).eval().requires_grad_(False).to(dev)
    clip_model = clip_model.eval().requires_grad_(False).to(dev)
    prepare_for_loop(None, clip_model)
    perceptor = Perceptor(clip_model)
    pulls = (SmoothnessTerm("tv", 600.0), RangeTerm("range", 50.0))
    objective = Objective(PromptTerm(weight=1000.0, targets=(_targets(perceptor, dev),)), pulls)
    augments = (make_augments(AUGMENTS, perceptor.input_resolution),)
    rows = []
    for cutn in cutns:
        loop = Loop(None, (perceptor,), objective, Cuts(augments, cutn), 0, precision)
        sampler = Sampler.for_unet(unet, 250, precision=precision)
        g = torch.Generator(device=dev).manual_seed(0)
        state = sampler.start(1, spec.image_size, spec.image_size, g)
        _reset_peak(dev)
        step = functools.partial(sampler.step, state, clip_guidance(loop))
        seconds = _time(step, dev, warmup, repeats)
        rows.append({"cutn": cutn, "s": seconds, "peak_mb": _peak_memory_mb(dev),
                     "minutes_per_image_250": seconds * 250 / 60})  # fmt: skip
    return {
        "device": dev.type if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "models": "tiny shapes models"
        if quick
        else "U-Net 256x256_diffusion_uncond + CLIP ViT-B/32, random weights",  # fmt: skip
        "size": spec.image_size,
        "precision": precision,
        "torch": torch.__version__,
        "rows": rows,
    }


def format_diffusion_table(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`run_diffusion_benchmark` results."""
    lines = [
        f"{results['models']} at {results['size']}² on {results['device']}; {results['precision']}; torch {results['torch']}",  # fmt: skip
        "",
        "| cutn | s per guided step | minutes per image (250 steps) | peak MB |",
        "|---|---|---|---|",
    ]
    for r in results["rows"]:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] else "n/a"
        lines.append(f"| {r['cutn']} | {r['s']:.2f} | {r['minutes_per_image_250']:.1f} | {peak} |")
    return "\n".join(lines)
