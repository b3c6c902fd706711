"""The optimisation loop: latent -> image -> cutouts -> CLIP -> losses -> optimiser step.

No printing and no files: progress and frames leave through ``callback({...})``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vqclip.cutouts import augment, make_cutouts, normalize
from vqclip.latents import decode_latent
from vqclip.losses import Targets, init_loss, prompt_losses, smoothness_loss, spherical_dist_loss
from vqclip.optimizers import make_optimizer
from vqclip.prior import prior_loss, prior_pull

__all__ = [
    "Loop",
    "LoopState",
    "compose_latent",
    "clamp_to_codebook",
    "image_losses",
    "weighted_distances",
    "best_candidates",
    "start_state",
    "step",
    "run_loop",
    "Callback",
]

Callback = Callable[[dict[str, Any]], None]
NOISE = 0.1  # per-cutout Gaussian noise scale, as in the classic notebooks


@dataclass(frozen=True)
class Loop:
    """What stays fixed during a run: models, targets and step settings."""

    vqgan: nn.Module
    clip_model: nn.Module
    targets: Targets
    augments: nn.Module
    cutn: int
    cut_pow: float
    init_weight: float
    seed: int  # the run's seed; kornia's per-step seed derives from it and the iteration
    precision: str = "fp32"  # "fp32", "bf16" or "fp16": autocast for decoder and CLIP
    smoothness: float = 0.0  # weight of the image's total variation, 0 = off
    prior: nn.Module | None = None  # an image prior (vqclip.prior), used when prior_weight > 0
    prior_weight: float = 0.0
    prior_ramp: int = 0  # iterations over which the prior's weight grows to prior_weight
    row_targets: tuple[Targets, ...] = ()  # per latent row, for a batch of prompts; () shared
    cut_method: str = "crops"  # see vqclip.cutouts.make_cutouts
    # A story's prompt phases (vqclip.schedule), each (targets, row_targets) as the fields of
    # those names take them; () for a run of one phase.
    phases: tuple[tuple[Targets, tuple[Targets, ...]], ...] = ()

    def prior_weight_at(self, iteration: int) -> float:
        """The prior's weight at step ``iteration`` (from 0): ``prior_weight / prior_ramp`` at
        the first step, growing linearly to ``prior_weight`` at step ``prior_ramp - 1``. CLIP
        settles the colours and the layout first; the pull makes the shape crisp at the end."""
        return self.prior_weight * min(1.0, (iteration + 1) / max(1, self.prior_ramp))


@dataclass
class LoopState:
    """Everything that changes during a run; enough to save and resume it.

    The latent is a pyramid: ``levels[-1]`` is the per-cell latent of the classic loop and each
    earlier level has half its resolution, upsampled and added. Adam moves every parameter by
    about the step size, so a coarse cell shifts a whole region at once: flat backgrounds and
    solid shapes form in a few steps instead of cell by cell. One level is the classic loop.
    """

    levels: list[torch.Tensor]  # coarse to fine, (B, D, h / 2^k, w / 2^k); all require grad
    start: torch.Tensor  # (B, D, h, w), the starting latent (init pull target)
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the only source of randomness in the loop
    iteration: int = 0

    @property
    def latent(self) -> torch.Tensor:
        """The composed latent (B, D, h, w), differentiable in every level."""
        return compose_latent(self.levels)


def compose_latent(levels: list[torch.Tensor]) -> torch.Tensor:
    """The finest level plus every coarser one, bilinearly upsampled to its size."""
    *coarse, latent = levels
    for level in coarse:
        up = F.interpolate(level, latent.shape[-2:], mode="bilinear", align_corners=False)
        latent = latent + up
    return latent


def start_state(
    latent: torch.Tensor,
    optimizer: str,
    lr: float,
    generator: torch.Generator,
    levels: int = 1,
) -> LoopState:
    """A fresh state that optimises a copy of ``latent`` as a pyramid of ``levels`` levels
    (the coarse ones start at zero)."""
    batch, dim, height, width = latent.shape
    params = [
        latent.new_zeros(batch, dim, max(1, height >> k), max(1, width >> k)).requires_grad_(True)
        for k in range(levels - 1, 0, -1)
    ]
    params.append(latent.detach().clone().requires_grad_(True))
    return LoopState(
        params, latent.detach().clone(), make_optimizer(optimizer, params, lr), generator
    )


@contextmanager
def _fast_math(loop: Loop, device: torch.device) -> Iterator[None]:
    """The loop's autocast and, on a CPU, attention by its plain matrix-product kernel: for
    CLIP's short sequences (50 tokens for ViT-B/32) torch's fused CPU attention is the slower
    one in bf16, backward above all (ViT-B/32 on 32 cutouts, forward and backward: 1.22 s ->
    0.95 s; fp32 unchanged)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(loop.precision)
    attention = sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else nullcontext()
    with (
        torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        attention,
    ):
        yield


def step(loop: Loop, state: LoopState) -> dict[str, torch.Tensor]:
    """One iteration; returns the image it scored and the losses (tensors, no host sync)."""
    latent = state.latent
    device = latent.device
    cut_size = loop.clip_model.visual.input_resolution
    # 1. Decode the (straight-through quantised) latent to pixels.
    with _fast_math(loop, device):
        image = decode_latent(loop.vqgan, latent)  # (B, 3, H, W) in [0, 1]
    # 2. Cut and augment: (B * cutn, 3, S, S).
    cutouts = make_cutouts(
        image, cut_size, loop.cutn, loop.cut_pow, state.generator, loop.cut_method
    )
    cutouts = augment(cutouts, loop.augments, NOISE, state.generator, _step_seed(loop, state))
    # 3. Score with CLIP and sum the losses.
    with _fast_math(loop, device):
        embeds = loop.clip_model.encode_image(normalize(cutouts)).float()  # (B * cutn, E)
    total, losses = _batch_losses(loop, embeds, len(image))
    if loop.init_weight:
        total = total + init_loss(latent, state.start, loop.init_weight)
    if loop.smoothness:
        total = total + smoothness_loss(image, loop.smoothness)
    if loop.prior is not None and loop.prior_weight:
        weight = loop.prior_weight_at(state.iteration)
        total = total + prior_loss(image, loop.prior, weight, partial(image_losses, loop))
    # 4. Step, then keep the latent inside the codebook's range.
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    state.optimizer.step()
    clamp_to_codebook(state.levels, loop.vqgan.codebook)
    state.iteration += 1
    return {"image": image.detach(), "loss": total.detach(), "losses": losses.detach()}


def _batch_losses(loop: Loop, embeds: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows * cutn, E) cutout embeddings -> (the prompt part of the objective, the losses per
    prompt (P,) for reports): each latent row's cutouts against its own targets, or all of them
    against the shared targets (each image's gradient then does not shrink with the batch)."""
    if not loop.row_targets:
        losses = prompt_losses(embeds, loop.targets)  # (P,)
        return losses.sum() * rows, losses
    per_row = embeds.view(rows, -1, embeds.shape[-1])  # (rows, cutn, E)
    losses = torch.cat(
        [prompt_losses(e, t) for e, t in zip(per_row, loop.row_targets, strict=True)]
    )
    return losses.sum(), losses


def _step_seed(loop: Loop, state: LoopState) -> int:
    return (loop.seed * 1_000_003 + state.iteration) % 2**63


@torch.no_grad()
def clamp_to_codebook(levels: list[torch.Tensor], codebook: torch.Tensor) -> None:
    """Keep the composed latent in the codebook's per-channel range (by moving the finest level)."""
    low = codebook.min(0).values.view(1, -1, 1, 1)
    high = codebook.max(0).values.view(1, -1, 1, 1)
    fine = levels[-1]
    if len(levels) == 1:
        fine.copy_(fine.maximum(low).minimum(high))
        return
    coarse = compose_latent([*levels[:-1], torch.zeros_like(fine)])
    fine.copy_((fine + coarse).maximum(low).minimum(high) - coarse)


@torch.no_grad()
def render(loop: Loop, state: LoopState) -> torch.Tensor:
    """The current image, (B, 3, H, W) in [0, 1]."""
    with _fast_math(loop, state.latent.device):
        return decode_latent(loop.vqgan, state.latent).float()


@torch.no_grad()
def image_losses(loop: Loop, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,): each whole image's weighted prompt loss, unaugmented.

    The same distances and weights as the loop (stops aside), on one resized view per image:
    what ranks candidates.
    """
    size = loop.clip_model.visual.input_resolution
    views = F.interpolate(images, (size, size), mode="bilinear", antialias=True)
    with _fast_math(loop, images.device):
        embeds = loop.clip_model.encode_image(normalize(views)).float()  # (B, E)
    if not loop.row_targets:
        return weighted_distances(embeds, loop.targets)
    # A batch of prompts: images come grouped by latent row (one, or a row's alternatives).
    groups = embeds.view(len(loop.row_targets), -1, embeds.shape[-1])
    pairs = zip(groups, loop.row_targets, strict=True)
    return torch.cat([weighted_distances(e, t) for e, t in pairs])


def weighted_distances(embeds: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(B, E) image embeddings -> (B,): each one's weighted distance to the targets."""
    distances = spherical_dist_loss(embeds[:, None], targets.embeds[None])  # (B, K)
    per_prompt = distances.new_zeros(len(embeds), targets.count).index_add(
        1, targets.owner, distances
    )
    return (per_prompt / targets.rows * targets.weights).sum(1)


def best_candidates(loop: Loop, images: torch.Tensor, candidates: int) -> torch.Tensor:
    """(N * candidates, 3, H, W), grouped image-major -> (N, 3, H, W): each group's best, by
    :func:`image_losses` plus the prior's pull where the loop has one (its whole objective)."""
    if candidates == 1:
        return images
    losses = image_losses(loop, images)
    if loop.prior is not None and loop.prior_weight:
        losses = losses + prior_pull(
            images, loop.prior, loop.prior_weight, partial(image_losses, loop)
        )
    losses = losses.view(-1, candidates)  # (N, candidates)
    groups = images.view(-1, candidates, *images.shape[1:])
    return groups[torch.arange(len(groups), device=images.device), losses.argmin(1)]


def iterations(max_iterations: int, start: int = 0) -> Iterator[int]:
    """0, 1, ... up to ``max_iterations`` (exclusive), or forever for -1."""
    i = start
    while max_iterations == -1 or i < max_iterations:
        yield i
        i += 1


def run_loop(
    loop: Loop,
    state: LoopState,
    max_iterations: int,
    display_frequency: int,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Run steps until ``max_iterations``; returns the final image (B, 3, H, W) in [0, 1].

    ``callback`` gets ``{"iteration", "loss", "losses"}`` every step, plus ``"image"`` (the image
    that step scored) every ``display_frequency`` steps. A non-finite loss raises
    ``FloatingPointError`` at the next display step (checking every step would sync the device).
    """
    for i in iterations(max_iterations, state.iteration):
        out = step(loop, state)
        info = {"iteration": i, "loss": out["loss"], "losses": out["losses"]}
        if i % display_frequency == 0:
            if not torch.isfinite(out["loss"]):
                raise FloatingPointError(_not_finite(loop, float(out["loss"]), i))
            info["image"] = out["image"]
        if callback:
            callback(info)
    return render(loop, state)


def _not_finite(loop: Loop, loss: float, iteration: int) -> str:
    """The error for a loss that is no longer a number, with what to try."""
    hint = {
        "fp16": "fp16 autocast overflows more easily than bf16 (same speed on recent GPUs) or fp32",
        "bf16": "rerun with precision fp32 to see whether autocast caused it",
    }.get(loop.precision, "check the inputs, or try a smaller step_size")
    return (
        f"loss became {loss} at iteration {iteration} (precision {loop.precision}); the frames "
        f"saved so far are kept. Expected a finite loss: {hint}."
    )
