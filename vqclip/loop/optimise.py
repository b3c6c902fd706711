"""The loop: generator -> image -> cutouts -> perceptors -> objective -> optimiser step.

No printing and no files: progress and frames leave through ``callback({...})``. The loop knows
its parts only by their interfaces (:mod:`vqclip.loop.generators`, :mod:`vqclip.loop.perceptors`,
:mod:`vqclip.loop.objective`), so that another generator or perceptor plugs in unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vqclip.loop.cutouts import augment, draw_places, greyscale, make_cutouts, overview_cutouts
from vqclip.loop.generators import Generator, compose_latent
from vqclip.loop.losses import Targets, own_region, spherical_dist_loss
from vqclip.loop.objective import Loss, Objective, PerceptorTargets, PromptTerm, View
from vqclip.loop.optimizers import make_optimizer
from vqclip.loop.perceptors import Perceptor
from vqclip.loop.processes import ONE_PROCESS, Processes
from vqclip.models.prior import Scores, box_slices, letterbox

__all__ = [
    "Cuts",
    "Loop",
    "LoopState",
    "compose_latent",
    "image_losses",
    "prompt_scores",
    "make_views",
    "backward_objective",
    "fast_math",
    "weighted_distances",
    "best_candidates",
    "start_state",
    "step",
    "render",
    "run_loop",
    "Callback",
]

Callback = Callable[[dict[str, Any]], None]
NOISE = 0.1  # per-cutout Gaussian noise scale, as in the classic notebooks


@dataclass(frozen=True)
class Cuts:
    """How each step cuts the image for the perceptors (:mod:`vqclip.loop.cutouts`)."""

    augments: tuple[nn.Module, ...]  # per perceptor: some augments depend on its input size
    cutn: int  # cutouts per image per step
    cut_pow: float = 1.0
    method: str = "crops"
    batches: int = 1  # scored in this many sequential batches, gradients accumulated
    # Boxes (left, top, right, bottom as fractions) whose own cutouts region prompts are scored
    # on; the whole image's come first. (): no prompt names a region.
    regions: tuple[tuple[float, float, float, float], ...] = ()
    overview: int = 0  # of the cutn, whole-image views first (Disco's cut_overview); 0: none
    grey: float = 0.0  # the share of the crops turned to greyscale (Disco's cut_icgray_p)


@dataclass(frozen=True)
class Loop:
    """What stays fixed during a run: its parts and settings."""

    generator: Generator | None  # what is optimised, and how it becomes pixels; None when the
    # loop scores a diffusion sample (vqclip.loop.diffusion.Sampler) instead
    perceptors: tuple[Perceptor, ...]  # the CLIPs; their weights are the prompt term's
    objective: Objective  # the prompts and the pulls
    cuts: Cuts
    seed: int  # the run's seed; kornia's per-step seed derives from it and the iteration
    precision: str = "fp32"  # "fp32", "bf16" or "fp16": autocast for generator and perceptors
    ema: float = 0.0  # the shown image's parameters: their moving average with this decay; 0: off
    processes: Processes = ONE_PROCESS  # who shares each step's cutouts (handed in by the driver)
    # (image, iteration) -> image, applied in order to every rendered image (plugins' transforms)
    transforms: tuple[Callable[[torch.Tensor, int], torch.Tensor], ...] = ()
    step_sizes: Callable[[int], float] | None = None  # step -> step size (None: the optimizer's)

    def at_phase(self, index: int, blend: tuple[int, float] | None = None) -> Loop:
        """The loop with the prompts of phase ``index`` of a story (``blend``: on the way from
        phase ``blend[0]``, ``blend[1]`` of the way)."""
        return replace(self, objective=self.objective.at_phase(index, blend))

    def with_targets(
        self, targets: PerceptorTargets, row_targets: tuple[PerceptorTargets, ...] = ()
    ) -> Loop:
        """The loop with other prompt targets."""
        return replace(self, objective=self.objective.with_targets(targets, row_targets))


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
    rng: torch.Generator  # the only source of randomness in the loop
    iteration: int = 0
    average: torch.Tensor | None = None  # (B, D, h, w) with Loop.ema: what the frames show

    @property
    def latent(self) -> torch.Tensor:
        """The composed latent (B, D, h, w), differentiable in every level."""
        return compose_latent(self.levels)

    def state_dict(self) -> dict[str, Any]:
        """The state as plain tensors and numbers (what ``state.pt`` holds)."""
        return {
            "iteration": self.iteration,
            "levels": [level.detach().cpu() for level in self.levels],
            "start": self.start.cpu(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.rng.get_state(),
            "average": None if self.average is None else self.average.cpu(),
        }

    @torch.no_grad()
    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Put a saved state (checked field by field by the reader) into this fresh one, built
        from the same config."""
        if "levels" not in saved:
            raise ValueError("resume: the saved state is a diffusion sample's, but the config optimises")  # fmt: skip
        shapes = [tuple(level.shape) for level in self.levels]
        if [tuple(level.shape) for level in saved["levels"]] != shapes:
            raise ValueError(
                f"resume: the saved latent has levels {[tuple(x.shape) for x in saved['levels']]}, "
                f"but the run's config builds {shapes}; was config.json edited?"
            )
        if saved["start"].shape != self.start.shape:
            raise ValueError(f"resume: the saved starting latent is {tuple(saved['start'].shape)}, not {tuple(self.start.shape)}; was state.pt edited?")  # fmt: skip
        for level, value in zip(self.levels, saved["levels"], strict=True):
            level.copy_(value)
        self.start.copy_(saved["start"])
        average = saved["average"]
        if average is not None and (
            not isinstance(average, torch.Tensor) or average.shape != self.start.shape
        ):
            raise ValueError(
                f"resume: the saved average is not a latent of shape {tuple(self.start.shape)}; "
                "was state.pt edited?"
            )
        self.average = None if average is None else average.to(self.start.device)
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.rng.set_state(saved["generator"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            detail = " ".join(str(error).split())[:200]
            raise ValueError(f"resume: the saved optimizer or generator state does not fit the run ({detail}); was state.pt edited?") from None  # fmt: skip
        self.iteration = saved["iteration"]


def start_state(
    latent: torch.Tensor,
    optimizer: str,
    lr: float,
    rng: torch.Generator,
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
    return LoopState(params, latent.detach().clone(), make_optimizer(optimizer, params, lr), rng)


@contextmanager
def fast_math(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast to ``precision`` (a loop's, a sampler's) and, on a CPU, attention by its plain
    matrix-product kernel: for CLIP's short sequences torch's fused CPU attention is the slower
    one in bf16, backward above all (docs/performance.md)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    attention = sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else nullcontext()
    with (
        torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        attention,
    ):
        yield


def step(loop: Loop, state: LoopState) -> dict[str, Any]:
    """One iteration; returns the image it scored and the losses (tensors, no host sync)."""
    latent = state.latent
    # 1. The generator renders its parameters: (B, 3, H, W) in [0, 1].
    with fast_math(loop.precision, latent.device):
        image = transformed(loop, loop.generator.decode(latent), state.iteration)
    # 2. Cut and augment, for each perceptor at its input size: (B * cutn, 3, S, S) each.
    views = make_views(loop, state, transformed(loop, image, state.iteration, views=True))
    # 3. The perceptors embed them, 4. the objective's terms add up, 5. back to the parameters.
    state.optimizer.zero_grad(set_to_none=True)
    total, terms, losses = backward_objective(loop, state, image, latent, views)
    # 6. Step, then keep the parameters in the generator's range.
    if loop.step_sizes:
        for group in state.optimizer.param_groups:
            group["lr"] = loop.step_sizes(state.iteration)
    state.optimizer.step()
    loop.generator.clamp(state.levels)
    state.iteration += 1
    if loop.ema:
        with torch.no_grad():
            latent = state.latent
            if state.average is None:  # from the first step after a start (or a zoom)
                state.average = latent.clone()
            else:
                state.average.lerp_(latent, 1 - loop.ema)
    return {
        "image": image.detach(),
        "loss": total.detach(),
        "losses": losses.detach(),
        "terms": {name: loss.detach() for name, loss in terms.items()},
    }


def make_views(loop: Loop, state: LoopState, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, 3, H, W) -> per perceptor, (B * cutn, 3, S, S) augmented cutouts at its input size.

    Every perceptor sees the same crops (the first perceptor's sizes) resampled to its input
    size, augmented with the same seed. The first draws its noise from the run's rng (so
    that one perceptor draws what the loop always drew), each other from its own rng
    seeded by the step: adding a perceptor changes nothing that the first one sees.
    """
    cuts, device = loop.cuts, image.device
    crops = cuts.cutn - cuts.overview
    places = draw_places(crops, state.rng, device) if cuts.method == "crops" else None
    seed = _step_seed(loop, state)
    views = []
    for index, (perceptor, augments) in enumerate(zip(loop.perceptors, cuts.augments, strict=True)):  # fmt: skip
        size, first = perceptor.input_resolution, loop.perceptors[0].input_resolution
        cutouts = torch.cat([
            _cut(part, cuts, size, state.rng, places, first)
            for part in region_crops(image, cuts.regions)
        ])  # fmt: skip
        noise = state.rng if index == 0 else _own_rng(seed + index, device)
        views.append(augment(cutouts, augments, NOISE, noise, seed))
    return tuple(views)


def _cut(
    image: torch.Tensor,
    cuts: Cuts,
    size: int,
    rng: torch.Generator,
    places: torch.Tensor | None,
    smallest: int,
) -> torch.Tensor:
    """(B, 3, H, W) -> (B * cutn, 3, size, size), image-major: the crops, or with a cut
    schedule each image's overview views, then its crops (the first ``grey`` share grey)."""
    crops = cuts.cutn - cuts.overview
    if not cuts.overview and not cuts.grey:
        return make_cutouts(image, size, crops, cuts.cut_pow, rng, cuts.method, places, smallest)
    parts = []
    if cuts.overview:
        parts.append(overview_cutouts(image, size, cuts.overview).unflatten(0, (len(image), -1)))
    if crops:
        cut = make_cutouts(image, size, crops, cuts.cut_pow, rng, cuts.method, places, smallest)
        cut = cut.unflatten(0, (len(image), crops))
        grey = round(cuts.grey * crops)
        parts.append(torch.cat([greyscale(cut[:, :grey]), cut[:, grey:]], 1) if grey else cut)
    return torch.cat(parts, 1).flatten(0, 1)


def region_crops(image: torch.Tensor, boxes: tuple[tuple[float, float, float, float], ...]) -> list[torch.Tensor]:  # fmt: skip
    """The whole image, then its crop to each box (at least one pixel each way)."""
    height, width = image.shape[-2:]
    return [image, *(image[(..., *box_slices(box, height, width))] for box in boxes)]


def backward_objective(
    loop: Loop,
    state: LoopState,
    image: torch.Tensor,
    latent: torch.Tensor,
    views: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Score the views by the objective and send its gradient back to whatever ``image`` and
    ``latent`` came from (in ``cuts.batches`` batches); returns the total, each term's loss
    and the per-prompt losses, detached or not."""
    if loop.cuts.batches > 1 or loop.processes.world > 1:
        return _score_in_batches(loop, state, image, latent, views)
    total, terms, losses = _score(loop, state, image, latent, views)
    total.backward()
    return total, terms, losses


def _step_seed(loop: Loop, state: LoopState) -> int:
    return (loop.seed * 1_000_003 + state.iteration) % 2**63


def _own_rng(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed % 2**63)


def _score(
    loop: Loop,
    state: LoopState,
    image: torch.Tensor,
    latent: torch.Tensor,
    views: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The objective of a step whose cutouts are all scored at once."""
    with fast_math(loop.precision, latent.device):
        embeds = tuple(p.encode_image(v) for p, v in zip(loop.perceptors, views, strict=True))
    scores = prompt_scores(loop)
    return loop.objective(View(image, latent, state.start, embeds, state.iteration, scores))


def _score_in_batches(
    loop: Loop,
    state: LoopState,
    image: torch.Tensor,
    latent: torch.Tensor,
    views: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The objective of a step, its cutouts scored batch by batch, and its gradient; with
    several processes (``loop.processes``), each scores its share of the batches.

    Each batch's prompt loss (its share of the cutouts) goes backward into detached copies of
    the cutouts at once, so that the perceptors hold one batch's activations at a time; then
    those gradients and the pulls go back through cutting and rendering in one pass. The
    prompts' loss is linear in the cutouts' distances, so the gradient is the unbatched one to
    float rounding; a prompt's stop is checked on each batch's own mean distance. Processes
    sum the cutouts' gradients, each a share of them and zeros elsewhere, which adds nothing
    but zeros, then each goes back through cutting and rendering alike.
    """
    leaves = [v.detach().requires_grad_(True) for v in views]
    cutn, rows = loop.cuts.cutn, len(image)
    scores = prompt_scores(loop)
    prompts = None
    for picks in loop.processes.my_batches(cutn, loop.cuts.batches, image.device):
        batch = [leaf.view(rows, cutn, *leaf.shape[1:])[:, picks].flatten(0, 1) for leaf in leaves]
        with fast_math(loop.precision, latent.device):
            embeds = tuple(p.encode_image(b) for p, b in zip(loop.perceptors, batch, strict=True))
        share = len(picks) / cutn
        view = View(image.detach(), latent.detach(), state.start, embeds, state.iteration, scores, share)  # fmt: skip
        loss = loop.objective.prompts(view)
        loss.total.backward()
        prompts = _accumulate(prompts, loss)
    view = View(image, latent, state.start, (), state.iteration, scores)
    if loop.processes.world > 1:
        loop.processes.sum_([leaf.grad for leaf in leaves])
        total, parts, *shares = loop.processes.sum_([prompts.total, prompts.parts, *prompts.by_perceptor])  # fmt: skip
        prompts = Loss(total, parts, tuple(shares))
    pulls, terms = loop.objective.add_pulls(view, torch.zeros((), device=image.device), {})
    tensors, grads = [*views], [leaf.grad for leaf in leaves]
    if pulls.requires_grad:  # no pulls: nothing but the cutouts to go back through
        tensors.append(pulls), grads.append(torch.ones_like(pulls))
    torch.autograd.backward(tensors, grads)
    reports = {**loop.objective.report(prompts), **terms}
    return prompts.total + pulls.detach(), reports, prompts.parts


def _accumulate(total: Loss | None, loss: Loss) -> Loss:
    """``total + loss``, detached: a batch's prompt loss added to what the step reports."""
    loss = Loss(loss.total.detach(), loss.parts.detach(), tuple(x.detach() for x in loss.by_perceptor))  # fmt: skip
    if total is None:
        return loss
    shares = tuple(a + b for a, b in zip(total.by_perceptor, loss.by_perceptor, strict=True))
    return Loss(total.total + loss.total, total.parts + loss.parts, shares)


@torch.no_grad()
def render(loop: Loop, state: LoopState) -> torch.Tensor:
    """The current image, (B, 3, H, W) in [0, 1]: of the parameters' moving average with
    ``loop.ema``."""
    latent = state.average if loop.ema and state.average is not None else state.latent
    with fast_math(loop.precision, latent.device):
        return transformed(loop, loop.generator.decode(latent), state.iteration).float()


def transformed(loop: Loop, image: torch.Tensor, iteration: int, views: bool = False) -> torch.Tensor:  # fmt: skip
    """The rendered image through the loop's transforms, in order (none: the image itself):
    those that make the image, or (``views``) those only for what is cut (``view_only``, a
    tile's roll)."""
    for transform in loop.transforms:
        if getattr(transform, "view_only", False) == views:
            image = transform(image, iteration)
    return image


@torch.no_grad()
def image_losses(loop: Loop, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,): each whole image's weighted prompt loss, unaugmented.

    The same distances and weights as the loop (stops aside), on one resized view per image
    and perceptor (and per region that prompts name, the region seen as a picture of its own:
    letterboxed, not stretched to a square): what ranks candidates.
    """
    prompts = loop.objective.prompts
    total = None
    for index, (perceptor, weight) in enumerate(zip(loop.perceptors, prompts.weights, strict=True)):  # fmt: skip
        size = perceptor.input_resolution
        views = torch.cat([
            F.interpolate(letterbox(part)[0], (size, size), mode="bilinear", antialias=True)
            for part in region_crops(images, loop.cuts.regions)
        ])  # fmt: skip
        with fast_math(loop.precision, images.device):
            embeds = perceptor.encode_image(views)  # (B, E)
        losses = _distances(prompts, embeds, index) * weight
        total = losses if total is None else total + losses
    return total


@torch.no_grad()
def region_losses(loop: Loop, group: int, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) images of one region's box -> (B,): the weighted loss of the prompts that
    name region ``group`` (the loop's ``cuts.regions``, from 1), each image seen as a picture of
    its own (letterboxed), as :func:`image_losses` sees that region."""
    prompts = loop.objective.prompts
    square = letterbox(images)[0]
    total = None
    for index, (perceptor, weight) in enumerate(zip(loop.perceptors, prompts.weights, strict=True)):  # fmt: skip
        size = perceptor.input_resolution
        views = F.interpolate(square, (size, size), mode="bilinear", antialias=True)
        with fast_math(loop.precision, images.device):
            embeds = perceptor.encode_image(views)  # (B, E)
        targets = prompts.targets[index]
        distances = spherical_dist_loss(embeds[:, None], targets.embeds[None])  # (B, K)
        theirs = (targets.region == group).to(distances.dtype)  # (P,)
        losses = (_per_prompt(distances, targets) * theirs).sum(1) * weight
        total = losses if total is None else total + losses
    return total


def prompt_scores(loop: Loop) -> Scores:
    """What ranks an image prior's alternatives: :func:`image_losses` for whole images and,
    for each region that prompts name, :func:`region_losses` for images of that region."""
    regions = tuple(
        (box, partial(region_losses, loop, group)) for group, box in enumerate(loop.cuts.regions, 1)
    )
    # Scored whole only where a prompt is: a prompt of the left half has nothing to say about
    # the shape the whole image's reading puts across the middle.
    targets = loop.objective.prompts.targets[0]
    unplaced = targets.region is None or bool((targets.region == 0).any())
    return Scores(partial(image_losses, loop) if unplaced else None, regions)


def _distances(prompts: PromptTerm, embeds: torch.Tensor, index: int) -> torch.Tensor:
    """(B, E) embeddings of perceptor ``index`` -> (B,) weighted distances to their targets."""
    if not prompts.row_targets:
        return weighted_distances(embeds, prompts.targets[index])
    # A batch of prompts: images come grouped by latent row (one, or a row's alternatives).
    groups = embeds.view(len(prompts.row_targets), -1, embeds.shape[-1])
    pairs = zip(groups, prompts.row_targets, strict=True)
    return torch.cat([weighted_distances(e, t[index]) for e, t in pairs])


def weighted_distances(embeds: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(B, E) image embeddings -> (B,): each one's weighted distance to the targets (with
    regions, (G * B, E): each region's views, the whole image's first)."""
    distances = spherical_dist_loss(embeds[:, None], targets.embeds[None])  # (B, K)
    if targets.region is not None:  # each row measured on its prompt's region's view
        distances = own_region(distances, targets)
    return _per_prompt(distances, targets).sum(1)


def _per_prompt(distances: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(B, K) distances to the target rows -> (B, P): each prompt's weighted mean distance."""
    per_prompt = distances.new_zeros(len(distances), targets.count).index_add(
        1, targets.owner, distances
    )
    return per_prompt / targets.rows * targets.weights


def best_candidates(loop: Loop, images: torch.Tensor, candidates: int) -> torch.Tensor:
    """(N * candidates, 3, H, W), grouped image-major -> (N, 3, H, W): each group's best, by
    :func:`image_losses` plus the pulls that rank images (the prior's): its whole objective."""
    if candidates == 1:
        return images
    losses = image_losses(loop, images)
    for term in loop.objective.pulls:
        share = term.rank(images, prompt_scores(loop))
        if share is not None:
            losses = losses + share
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

    ``callback`` gets ``{"iteration", "loss", "losses", "terms"}`` every step (per prompt, and
    per term by name), plus ``"image"`` (the image
    that step scored, or with ``loop.ema`` the average after it) every ``display_frequency``
    steps. A non-finite loss raises
    ``FloatingPointError`` at the next display step (checking every step would sync the device).
    """
    for i in iterations(max_iterations, state.iteration):
        out = step(loop, state)
        info = {"iteration": i, **{k: out[k] for k in ("loss", "losses", "terms")}}
        if i % display_frequency == 0:
            if not torch.isfinite(out["loss"]):
                raise FloatingPointError(_not_finite(loop, float(out["loss"]), i))
            info["image"] = render(loop, state) if loop.ema else out["image"]
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
