"""The objective: a sum of named terms, each with its weight and schedule, each reporting its loss.

Every step the loop hands the terms one :class:`View` (the image, the generator's parameters,
the cutouts' embeddings) and adds up what they return, in order: the prompts, then the pulls
(toward the start, toward flat regions, toward the image prior's redrawing). A term's weight at
step ``i`` is ``weight * min(1, (i + 1) / ramp)``: a ramp lets CLIP settle colours and layout
before a pull takes hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from vqclip.loop.losses import Targets, blend_targets, init_loss, prompt_losses, smoothness_loss
from vqclip.models.prior import Scores, prior_loss, prior_pull

__all__ = [
    "View", "Loss", "Term", "PromptTerm", "InitTerm", "SmoothnessTerm", "RangeTerm", "PriorTerm",
    "TemporalTerm", "Objective", "PerceptorTargets",
]  # fmt: skip


@dataclass(frozen=True)
class View:
    """What the terms read at one step."""

    image: torch.Tensor  # (B, 3, H, W) in [0, 1], differentiable
    latent: torch.Tensor  # (B, C, h, w) the generator's composed parameters
    start: torch.Tensor  # (B, C, h, w) the parameters the run (or the last zoom) started from
    embeds: tuple[torch.Tensor, ...]  # per perceptor, (B * cutn, E) cutout embeddings, image-major
    iteration: int
    scores: (
        Scores  # images -> their prompt loss, whole and by region (ranks a prior's alternatives)
    )
    share: float = 1.0  # the fraction of the step's cutouts these are (cutout batches)


class Loss(NamedTuple):
    total: torch.Tensor  # () the term's weighted loss
    parts: torch.Tensor | None = None  # (P,) per prompt, for reports; None for a single term
    by_perceptor: tuple[torch.Tensor, ...] = ()  # () each perceptor's weighted share, for reports


@dataclass(frozen=True)
class Term(ABC):
    """A named, weighted part of the objective; each kind says how it scores a step."""

    name: str = ""
    weight: float = 1.0
    ramp: int = 0  # iterations over which the weight grows to ``weight``; 0: from the start

    def weight_at(self, iteration: int) -> float:
        """The weight at step ``iteration`` (from 0)."""
        return self.weight * min(1.0, (iteration + 1) / max(1, self.ramp))

    @abstractmethod
    def __call__(self, view: View) -> Loss:
        """The term's loss at this step, weighted."""

    def rank(self, images: torch.Tensor, scores: Scores) -> torch.Tensor | None:
        """(N, 3, H, W) -> (N,): the term's share of each candidate's rank, or None."""
        return None


PerceptorTargets = tuple[Targets, ...]  # one prompt list's targets in each perceptor's space


@dataclass(frozen=True)
class PromptTerm(Term):
    """The weighted spherical distance of the cutouts to the prompts' embeddings, in each
    perceptor's embedding space, summed with the perceptors' ``weights``.

    ``row_targets`` gives each latent row (a batch of prompts) its own targets, else every
    image shares ``targets``; ``phases`` holds each phase of a story as (targets, row_targets).
    """

    name: str = "prompts"
    weight: float = 1.0
    targets: PerceptorTargets = ()
    row_targets: tuple[PerceptorTargets, ...] = ()
    phases: tuple[tuple[PerceptorTargets, tuple[PerceptorTargets, ...]], ...] = ()
    weights: tuple[float, ...] = (1.0,)  # per perceptor
    names: tuple[str, ...] = ("clip",)  # per perceptor, for reports

    def __call__(self, view: View) -> Loss:
        total, parts, shares = None, None, []
        for index, (embeds, weight) in enumerate(zip(view.embeds, self.weights, strict=True)):
            loss = self._score(embeds, len(view.image), index)
            share = loss.total * (weight * view.share)  # exact for one perceptor, weight 1
            shares.append(share)
            total = share if total is None else total + share
            scaled = loss.parts * (weight * view.share)
            parts = scaled if parts is None else parts + scaled
        return Loss(total * self.weight, parts, tuple(shares))

    def _score(self, embeds: torch.Tensor, rows: int, index: int) -> Loss:
        """Perceptor ``index``'s loss, unweighted by its perceptor weight."""
        if not self.row_targets:
            losses = prompt_losses(embeds, self.targets[index])  # (P,)
            return Loss(losses.sum() * rows, losses)  # each image's full pull
        per_row = embeds.view(rows, -1, embeds.shape[-1])  # (rows, cutn, E)
        losses = torch.cat(
            [prompt_losses(e, t[index]) for e, t in zip(per_row, self.row_targets, strict=True)]
        )
        return Loss(losses.sum(), losses)

    def at_phase(self, index: int) -> PromptTerm:
        """This term with phase ``index``'s targets."""
        targets, row_targets = self.phases[index]
        return replace(self, targets=targets, row_targets=row_targets)

    def at_blend(self, first: int, second: int, share: float) -> PromptTerm:
        """This term between phases ``first`` and ``second``: both phases' prompts, their
        weights scaled by ``1 - share`` and ``share`` (:func:`~vqclip.loop.losses.blend_targets`)."""
        (a, a_rows), (b, b_rows) = self.phases[first], self.phases[second]

        def blend(x: PerceptorTargets, y: PerceptorTargets) -> PerceptorTargets:
            return tuple(blend_targets(s, t, share) for s, t in zip(x, y, strict=True))

        rows = tuple(blend(x, y) for x, y in zip(a_rows, b_rows, strict=True))
        return replace(self, targets=blend(a, b), row_targets=rows)


@dataclass(frozen=True)
class InitTerm(Term):
    """``weight / 2 * MSE`` of the parameters to where they started (the init image's)."""

    name: str = "init"

    def __call__(self, view: View) -> Loss:
        return Loss(init_loss(view.latent, view.start, self.weight_at(view.iteration)))


@dataclass(frozen=True)
class SmoothnessTerm(Term):
    """The image's total variation: flat regions with short borders over speckle."""

    name: str = "smoothness"

    def __call__(self, view: View) -> Loss:
        return Loss(smoothness_loss(view.image, self.weight_at(view.iteration)))


@dataclass(frozen=True)
class RangeTerm(Term):
    """The squared excess of a diffusion sample's clean estimate (``view.latent``, in [-1, 1])
    beyond its range, per image, summed over the batch (Crowson's range loss)."""

    name: str = "range"

    def __call__(self, view: View) -> Loss:
        excess = view.latent - view.latent.clamp(-1, 1)
        return Loss(excess.pow(2).mean((1, 2, 3)).sum() * self.weight_at(view.iteration))


@dataclass(frozen=True)
class TemporalTerm(Term):
    """A restyled frame's pull toward the previous frame's result (or that result warped along
    the flow, where ``mask`` says the flow holds): the pixels' mean squared difference, per
    image, summed over the batch."""

    name: str = "temporal"
    target: torch.Tensor | None = None  # (B, 3, H, W) in [0, 1], one per image of the batch
    mask: torch.Tensor | None = None  # (B, 1, H, W) in [0, 1]: where the pull applies; None: all

    def __call__(self, view: View) -> Loss:
        error = (view.image - self.target).pow(2)
        if self.mask is not None:
            error = error * self.mask
        return Loss(error.mean((1, 2, 3)).sum() * self.weight_at(view.iteration))


@dataclass(frozen=True)
class PriorTerm(Term):
    """The pull toward an image prior's redrawing of the image (:mod:`vqclip.models.prior`)."""

    name: str = "prior"
    prior: nn.Module | None = None
    # The generator's images -> parameters: the pull goes to its parameters (None: the pixels).
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, view: View) -> Loss:
        weight = self.weight_at(view.iteration)
        return Loss(
            prior_loss(view.image, self.prior, weight, view.scores, view.latent, self.encode)
        )

    def rank(self, images: torch.Tensor, scores: Scores) -> torch.Tensor:
        return prior_pull(images, self.prior, self.weight, scores)


@dataclass(frozen=True)
class Objective:
    """The prompts and the pulls, summed in order."""

    prompts: PromptTerm
    pulls: tuple[Term, ...] = ()

    @property
    def terms(self) -> tuple[Term, ...]:
        return (self.prompts, *self.pulls)

    def __call__(self, view: View) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The total loss, each term's loss by name, and the per-prompt losses (P,)."""
        prompts = self.prompts(view)
        total, reports = self.add_pulls(view, prompts.total, self.report(prompts))
        return total, reports, prompts.parts

    def report(self, prompts: Loss) -> dict[str, torch.Tensor]:
        """The prompt term's loss by name, and each perceptor's share when there are several."""
        reports = {self.prompts.name: prompts.total}
        if len(prompts.by_perceptor) > 1:
            names = (f"{self.prompts.name}:{name}" for name in self.prompts.names)
            reports.update(zip(names, prompts.by_perceptor, strict=True))
        return reports

    def add_pulls(
        self, view: View, total: torch.Tensor, reports: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``total`` plus every pull, in order; each pull's loss added to ``reports``."""
        for term in self.pulls:
            loss = term(view).total
            total = total + loss
            reports[term.name] = loss
        return total, reports

    def at_phase(self, index: int, blend: tuple[int, float] | None = None) -> Objective:
        """The objective with the prompts of phase ``index`` of a story, or (``blend``: the
        phase before and the share of this one) on the way to them."""
        if blend is None:
            return replace(self, prompts=self.prompts.at_phase(index))
        return replace(self, prompts=self.prompts.at_blend(blend[0], index, blend[1]))

    def with_targets(
        self, targets: PerceptorTargets, row_targets: tuple[PerceptorTargets, ...] = ()
    ) -> Objective:
        """The objective with other prompt targets (and no story)."""
        prompts = replace(self.prompts, targets=targets, row_targets=row_targets, phases=())
        return replace(self, prompts=prompts)
