"""CLIP-guided diffusion: Katherine Crowson's second method, a sampler beside the optimised loop.

A diffusion model (any ``model(x, t)``, or ``model(x, t, cond)`` for one that reads the
prompts; vqclip's is :mod:`vqclip.models.unet`) is sampled step by step over a respaced
schedule (its 1000 training steps respaced to ``max_iterations``, as OpenAI's
``timestep_respacing``). At each step the model predicts the clean image and a guidance
function moves the step: :func:`clip_guidance` has CLIP score cutouts of the estimate (blended
with the noisy sample by the noise level, as Crowson's notebook does) through the loop's own
cutouts, augments and objective (the prompts weighted by ``clip_guidance_scale``, total
variation by ``tv_scale``, out-of-range values by ``range_scale``); the gradient of that loss
with respect to the noisy sample (its RMS per image at most ``clamp_max``, as Disco Diffusion
clamps it: at the noisiest steps the clean estimate magnifies the gradient) moves the step's
mean (DDPM) or its noise estimate (DDIM). A model that reads the prompts gets their embedding
in its CLIP's space (:func:`prompt_condition`) and is guided free of a classifier too: its
estimate pushed ``cond_scale`` times from the unconditional one through the conditional.
Every random draw goes through the run's ``torch.Generator``, so a config gives the same bits
on a CPU, and the sample, the step and the generator are all a resumed run needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vqclip.loop.latents import clamp_with_grad
from vqclip.loop.losses import Targets
from vqclip.loop.objective import PromptTerm
from vqclip.loop.optimise import (
    Callback,
    Loop,
    backward_objective,
    fast_math,
    iterations,
    make_views,
    transformed,
)
from vqclip.models.unet import UNet

__all__ = [
    "Schedule",
    "Sampler",
    "SampleState",
    "Model",
    "Guidance",
    "clip_guidance",
    "prompt_condition",
    "make_schedule",
    "respaced_timesteps",
    "pred_xstart",
    "to_image",
]

SAMPLERS = ("ddpm", "ddim")


def _betas(spec_steps: int, schedule: str) -> torch.Tensor:
    """The training schedule's betas, (T,) float64, as OpenAI's ``get_named_beta_schedule``."""
    if schedule == "linear":
        scale = 1000 / spec_steps
        return torch.linspace(scale * 1e-4, scale * 0.02, spec_steps, dtype=torch.float64)

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / spec_steps) / alpha_bar(i / spec_steps), 0.999)
        for i in range(spec_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def respaced_timesteps(total: int, count: int) -> list[int]:
    """``count`` of the ``total`` training steps, evenly spaced from 0 to ``total - 1`` (OpenAI's
    ``space_timesteps`` with one section; Python's rounding, as theirs)."""
    if not 1 <= count <= total:
        raise ValueError(
            f"max_iterations: {count} sampling steps, expected 1 to the model's {total}"
        )
    if count == 1:
        return [0]
    stride = (total - 1) / (count - 1)
    return [round(k * stride) for k in range(count)]


@dataclass(frozen=True)
class Schedule:
    """A respaced schedule's per-step quantities, (N,) float64, index 0 the least noisy."""

    timesteps: torch.Tensor  # (N,) the training timestep each respaced step stands for
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance: torch.Tensor  # clipped at step 0, as OpenAI's
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor

    def __len__(self) -> int:
        return len(self.timesteps)

    def at(self, name: str, index: int, like: torch.Tensor) -> torch.Tensor:
        """The quantity ``name`` at step ``index`` as a float32 scalar on ``like``'s device."""
        return getattr(self, name)[index].to(device=like.device, dtype=torch.float32)


def make_schedule(training_steps: int, noise_schedule: str, count: int) -> Schedule:
    """The model's schedule respaced to ``count`` steps."""
    kept = respaced_timesteps(training_steps, count)
    cumprod = torch.cumprod(1 - _betas(training_steps, noise_schedule), 0)
    acp = cumprod[kept]
    prev = torch.cat([acp.new_ones(1), acp[:-1]])
    betas = 1 - acp / prev
    variance = betas * (1 - prev) / (1 - acp)
    log_variance = torch.log(torch.cat([variance[1:2], variance[1:]]))
    return Schedule(
        timesteps=torch.tensor(kept),
        betas=betas,
        alphas_cumprod=acp,
        alphas_cumprod_prev=prev,
        posterior_variance=variance,
        posterior_log_variance=log_variance,
        posterior_mean_coef1=betas * prev.sqrt() / (1 - acp),
        posterior_mean_coef2=(1 - prev) * (1 - betas).sqrt() / (1 - acp),
        sqrt_recip_alphas_cumprod=(1 / acp).sqrt(),
        sqrt_recipm1_alphas_cumprod=(1 / acp - 1).sqrt(),
    )


Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Guidance = Callable[
    ["SampleState", torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, Any]]
]


@dataclass
class SampleState:
    """Everything that changes during sampling; enough to save and resume it."""

    sample: torch.Tensor  # (B, 3, H, W) x_t, the noisy image the next step denoises
    start: torch.Tensor  # (B, 3, H, W) the init image in [-1, 1] (zeros without one)
    rng: torch.Generator  # the only source of randomness
    first: int  # the respaced step sampling started at (its count less skip_timesteps) - 1
    iteration: int = 0  # steps done
    pred: torch.Tensor | None = None  # the last step's predicted clean image, in [-1, 1]

    @property
    def latent(self) -> torch.Tensor:
        """What the run shows: the last step's clean estimate; the sample before the first
        step and after the last."""
        done = self.iteration > self.first
        return self.sample if self.pred is None or done else self.pred

    @property
    def index(self) -> int:
        """The respaced step the next iteration takes."""
        return self.first - self.iteration

    def image(self) -> torch.Tensor:
        """What the run shows, (B, 3, H, W) in [0, 1]."""
        return to_image(self.latent)

    def state_dict(self) -> dict[str, Any]:
        """The state as plain tensors and numbers (what ``state.pt`` holds)."""
        return {
            "iteration": self.iteration,
            "sample": self.sample.detach().cpu(),
            "pred": None if self.pred is None else self.pred.detach().cpu(),
            "start": self.start.cpu(),
            "generator": self.rng.get_state(),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Put a saved state (checked field by field by the reader) into this fresh one, built
        from the same config."""
        sample = saved.get("sample")
        if "levels" in saved or not isinstance(sample, torch.Tensor):
            raise ValueError("resume: the saved state is an optimised latent's, but the config samples diffusion")  # fmt: skip
        if sample.shape != self.sample.shape:
            raise ValueError(
                f"resume: the saved diffusion sample is {tuple(sample.shape)}, but the run's "
                f"config builds {tuple(self.sample.shape)}; was config.json edited?"
            )
        iteration = saved["iteration"]
        if not isinstance(iteration, int) or not 0 <= iteration <= self.first + 1:
            raise ValueError(f"resume: the saved step {iteration!r} is outside the run's schedule")
        pred = saved["pred"]
        if saved["start"].shape != self.start.shape or (pred is not None and pred.shape != sample.shape):  # fmt: skip
            raise ValueError("resume: the saved start or estimate does not fit the run's sample; was state.pt edited?")  # fmt: skip
        device = self.sample.device
        self.sample = sample.to(device)
        self.pred = None if pred is None else pred.to(device)
        self.start = saved["start"].to(device)
        try:
            self.rng.set_state(saved["generator"])
        except (TypeError, RuntimeError) as error:
            raise ValueError(f"resume: the saved generator state does not fit ({' '.join(str(error).split())[:200]})") from None  # fmt: skip
        self.iteration = iteration


def to_image(x: torch.Tensor) -> torch.Tensor:
    """A sample or clean estimate in [-1, 1] as an image in [0, 1]."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def pred_xstart(schedule: Schedule, x: torch.Tensor, eps: torch.Tensor, index: int) -> torch.Tensor:  # fmt: skip
    """The clean image that ``x`` at step ``index`` with noise ``eps`` came from."""
    recip = schedule.at("sqrt_recip_alphas_cumprod", index, x)
    return recip * x - schedule.at("sqrt_recipm1_alphas_cumprod", index, x) * eps


@dataclass(frozen=True)
class Sampler:
    """DDPM or DDIM (eta 0) over a respaced schedule, each step moved by a guidance direction.

    ``model(x, t)`` is any noise predictor (``t`` the training timesteps, float); with
    ``variance`` "learned" its output holds, after the noise, the values that interpolate the
    log variance between its bounds (OpenAI's learned range), else the variance is fixed:
    "small" (the posterior's) or "large" (the betas). What guides is handed in at each step
    (:func:`clip_guidance` builds the loop's), so the sampler knows nothing of CLIP.
    """

    model: Model
    schedule: Schedule
    variance: str = "large"  # "learned", "small" or "large"
    method: str = "ddpm"  # or "ddim"
    clamp_max: float = 0.0  # each image's guidance at most this in RMS; 0: unbounded
    precision: str = "fp32"  # the model's autocast
    # a model conditioned on this CLIP's prompt embedding (its U-Net's cond_clip; "": none),
    # its noise estimate pushed cond_scale times from the unconditional one toward the
    # conditional (Ho and Salimans' classifier-free guidance; 1: the conditional alone)
    cond_clip: str = ""
    cond_scale: float = 1.0
    # (image, step) -> image, applied to the sample and its clean estimate after each step (a
    # symmetry: range-agnostic, so the noisy sample can be mirrored as the clean one)
    transforms: tuple[Callable[[torch.Tensor, int], torch.Tensor], ...] = ()

    @classmethod
    def for_unet(
        cls,
        unet: UNet,
        steps: int,
        method: str = "ddpm",
        clamp_max: float = 0.0,
        precision: str = "fp32",
        cond_scale: float = 1.0,
    ) -> Sampler:
        """A sampler of an OpenAI-style U-Net, its schedule respaced to ``steps``. A U-Net
        guided free of a classifier runs in fp32 under ``precision`` bf16: the guidance
        multiplies the difference of two estimates, and bf16's 8-bit fractions rounded it
        into misdrawn shapes (docs/shapes.md: joint 88% against 97% with the U-Net in fp32)."""
        spec = unet.spec
        variance = "learned" if spec.learn_sigma else "small" if spec.sigma_small else "large"
        schedule = make_schedule(spec.diffusion_steps, spec.noise_schedule, steps)
        if spec.cond_dim and cond_scale != 1 and precision == "bf16":
            precision = "fp32"
        return cls(unet, schedule, variance, method, clamp_max, precision, spec.cond_clip, cond_scale)  # fmt: skip

    def condition(self, loop: Loop, rows: int) -> torch.Tensor | None:
        """What a conditioned model reads for ``loop``'s prompts (:func:`prompt_condition`), one
        row per image; None for an unconditional model."""
        if not self.cond_clip:
            return None
        names = [p.name for p in loop.perceptors]
        if self.cond_clip not in names:
            raise ValueError(
                f"clip_model: the diffusion model reads {self.cond_clip}'s embeddings of the "
                f"prompts; expected clip_model to name {self.cond_clip} (it names {', '.join(names)})"
            )
        return prompt_condition(loop.objective.prompts, names.index(self.cond_clip), rows)

    def start(
        self,
        batch: int,
        height: int,
        width: int,
        rng: torch.Generator,
        init: torch.Tensor | None = None,
        skip: int = 0,
    ) -> SampleState:
        """The state before the first step: noise, or ``init`` ((B, 3, H, W) in [0, 1]) noised to
        the level of the first step taken (``skip`` steps into the schedule)."""
        schedule = self.schedule
        if not 0 <= skip < len(schedule):
            raise ValueError(
                f"skip_timesteps: {skip}, expected 0 to {len(schedule) - 1} (fewer than the "
                f"{len(schedule)} sampling steps)"
            )
        first = len(schedule) - 1 - skip
        noise = torch.randn((batch, 3, height, width), generator=rng, device=rng.device)
        if init is None:
            return SampleState(noise, torch.zeros_like(noise), rng, first)
        x0 = (init.to(noise.device).float() * 2 - 1).expand_as(noise)
        acp = schedule.at("alphas_cumprod", first, noise)
        sample = acp.sqrt() * x0 + (1 - acp).sqrt() * noise
        return SampleState(sample, x0.clone(), rng, first)

    def predict(
        self, x: torch.Tensor, index: int, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's noise estimate for ``x`` at respaced step ``index`` (given ``cond``,
        guided free of a classifier), and the step's log variance (OpenAI's
        ``p_mean_variance``)."""
        schedule = self.schedule
        t = schedule.timesteps[index].to(x.device, torch.float32).expand(len(x))
        if cond is None:
            out = self.model(x, t).float()
        elif self.cond_scale == 1:
            out = self.model(x, t, cond).float()
        else:  # both estimates in one batch; the variance's values are the conditional's
            both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]))  # fmt: skip
            conditional, free = both.float().chunk(2)
            eps = free[:, :3] + self.cond_scale * (conditional[:, :3] - free[:, :3])
            out = torch.cat([eps, conditional[:, 3:]], dim=1)
        if self.variance == "learned":  # the variance interpolated between its bounds
            eps, values = out.chunk(2, dim=1)
            min_log = schedule.at("posterior_log_variance", index, x)
            max_log = schedule.at("betas", index, x).log()
            frac = (values + 1) / 2
            return eps, frac * max_log + (1 - frac) * min_log
        if self.variance == "small":
            return out, schedule.at("posterior_log_variance", index, x).expand_as(x)
        large = schedule.posterior_variance[1] if index == 0 else schedule.betas[index]
        return out, torch.full_like(x, math.log(float(large)))

    def step(
        self, state: SampleState, guidance: Guidance, cond: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """One guided step from ``state.sample`` (a conditioned model reading ``cond``: (B, D));
        returns the predicted clean image (in [0, 1]) and what ``guidance`` reports (tensors,
        no host sync)."""
        schedule, index = self.schedule, state.index
        x = state.sample.detach().requires_grad_(True)
        with fast_math(self.precision, x.device):
            eps, log_variance = self.predict(x, index, cond)
        pred = pred_xstart(schedule, x, eps, index)
        noise = (1 - schedule.at("alphas_cumprod", index, x)).sqrt()
        grad, report = guidance(state, x, pred, noise)
        if self.clamp_max:  # each image's gradient at most clamp_max in RMS, as Disco Diffusion's
            rms = grad.square().mean((1, 2, 3), keepdim=True).sqrt()
            grad = grad * (self.clamp_max / rms.clamp(min=1e-12)).clamp(max=1)
        x, eps, log_variance = x.detach(), eps.detach(), log_variance.detach()
        pred = pred.detach().clamp(-1, 1)  # OpenAI's clip_denoised: the mean from a valid image
        if self.method == "ddpm":  # the mean moved by variance x gradient (OpenAI's condition_mean)
            mean = schedule.at("posterior_mean_coef1", index, x) * pred
            mean = mean + schedule.at("posterior_mean_coef2", index, x) * x
            mean = mean + log_variance.exp() * grad
            noise = torch.randn(x.shape, generator=state.rng, device=x.device)
            sample = mean + (0.5 * log_variance).exp() * noise if index else mean
        else:  # DDIM, eta 0: the noise estimate (that of the clamped clean estimate) moved by
            # the gradient (OpenAI's condition_score), its clean estimate clamped again (the
            # noisiest step would magnify the gradient ~1/sqrt(alpha_bar) times into it)
            acp = schedule.at("alphas_cumprod", index, x)
            recip = schedule.at("sqrt_recip_alphas_cumprod", index, x)
            recipm1 = schedule.at("sqrt_recipm1_alphas_cumprod", index, x)
            eps = (recip * x - pred) / recipm1 - (1 - acp).sqrt() * grad
            pred = pred_xstart(schedule, x, eps, index).clamp(-1, 1)
            eps = (recip * x - pred) / recipm1
            prev = schedule.at("alphas_cumprod_prev", index, x)
            sample = pred * prev.sqrt() + (1 - prev).sqrt() * eps
        for transform in self.transforms:
            sample, pred = transform(sample, state.iteration), transform(pred, state.iteration)
        state.sample, state.pred = sample, pred
        state.iteration += 1
        return {"image": to_image(pred), **report}

    def run(
        self,
        state: SampleState,
        guidance: Guidance,
        display_frequency: int,
        callback: Callback | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample to the end of the schedule; returns the final image (B, 3, H, W) in [0, 1].

        ``callback`` gets what :func:`vqclip.loop.optimise.run_loop` reports: every step the
        losses, every ``display_frequency`` steps (and at the last) the predicted clean image.
        ``cond``: what a conditioned model reads (:meth:`condition`).
        """
        for i in iterations(state.first + 1, state.iteration):
            out = self.step(state, guidance, cond)
            info = {"iteration": i, **{k: out[k] for k in ("loss", "losses", "terms")}}
            if i % display_frequency == 0:
                if not torch.isfinite(out["loss"]):
                    raise FloatingPointError(
                        f"loss became {float(out['loss'])} at sampling step {i} (precision "
                        f"{self.precision}); the frames saved so far are kept. Expected a finite "
                        "loss: try precision fp32 or a smaller clip_guidance_scale."
                    )
                info["image"] = out["image"]
            if callback:
                callback(info)
        return state.image()


def prompt_condition(prompts: PromptTerm, perceptor: int, rows: int) -> torch.Tensor:
    """(rows, D): each image's prompts in one perceptor's space as a conditioned model reads
    them: the mean of each prompt's embeddings, weighted by its weight (negative prompts and
    those blended out left aside), normalised; zeros (no condition: normalising keeps them)
    without a positive one."""

    def mean(targets: Targets) -> torch.Tensor:
        share = targets.weights.clamp(min=0) / targets.rows.clamp(min=1)  # (P,)
        return F.normalize((share[targets.owner, None] * targets.embeds).sum(0), dim=0)

    if prompts.row_targets:
        return torch.stack([mean(row[perceptor]) for row in prompts.row_targets]).float()
    return mean(prompts.targets[perceptor]).float().expand(rows, -1)


def clip_guidance(loop: Loop, at: Callable[[int], Loop] | None = None) -> Guidance:
    """The loop's objective (CLIP on cutouts, the pulls) as a sampler's guidance: minus its
    gradient with respect to the noisy sample ``x`` (a leaf that requires grad), scored on
    Crowson's blend of the clean estimate and ``x`` by the step's ``noise`` level (the
    estimate kept in range for CLIP, the gradient passing the clamp). ``at(step)``: the loop
    in force at a step (a cut schedule's cuts), if it changes."""

    def guide(
        state: SampleState, x: torch.Tensor, pred: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        loop_now = at(state.iteration) if at else loop
        blend = clamp_with_grad(pred, -1.0, 1.0) * noise + x * (1 - noise)
        image = (blend + 1) / 2
        views = make_views(loop_now, state, transformed(loop_now, image, state.iteration, views=True))  # fmt: skip
        total, terms, losses = backward_objective(loop_now, state, image, pred, views)
        grad = x.grad if x.grad is not None else torch.zeros_like(x)
        report = {"loss": total.detach(), "losses": losses.detach(), "terms": {k: v.detach() for k, v in terms.items()}}  # fmt: skip
        return -grad, report

    return guide
