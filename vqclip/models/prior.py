"""Image priors: a model that redraws an image as the nearest image of the kind it knows.

The loop can pull each generated image toward its redrawing, ``prior_weight * MSE(image,
redraw(image))`` with the redrawing held fixed. CLIP decides what the image shows; the prior only
keeps it near images of the kind the prior knows. A prior is an ``nn.Module`` with a
``resolution``, whose ``forward(images, size)`` reads ``resolution``-square images and returns
their redrawing ``size`` pixels square; one that also has ``alternatives(images, size)`` offers
several, and the loop's prompt loss picks. A prior works at any image size: the image is read
letterboxed into a square (padded with the median colour of its border) and resized to the
prior's resolution, and the redrawing is made at the square's size and cropped back, so that
shapes keep their proportions on a wide or tall image.

A plugin registers its kinds of prior (:func:`register_prior_kind`): the shapes world's
``shapes-prior`` turns the loop's blobs into clean shapes. A prior file is a dict of plain data,
``{"kind", "state_dict"}`` (fp16 weights), loaded safely; its kind names the class to build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.core.plugins import load_plugins
from vqclip.models.checkpoints import check_fits, load_checkpoint

__all__ = [
    "register_prior_kind", "prior_kinds", "load_prior", "save_prior", "redraw", "prior_loss",
    "prior_pull",
]  # fmt: skip

Score = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, S, S) -> (N,), lower is better

_KINDS: dict[str, type[nn.Module]] = {}


def register_prior_kind(kind: str, cls: type[nn.Module]) -> None:
    """Name a prior class (a plugin's) so that its files can be saved and loaded."""
    _KINDS[kind] = cls


def prior_kinds() -> dict[str, type[nn.Module]]:
    """The known prior classes, by the kind their files name."""
    load_plugins()
    return dict(_KINDS)


def save_prior(model: nn.Module, path: str | Path) -> None:
    """Save a prior of a known kind: its kind and its weights in fp16."""
    kinds = {cls: kind for kind, cls in prior_kinds().items()}
    if type(model) not in kinds:
        raise ValueError(f"save_prior: {type(model).__name__} is not a known prior kind")
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"kind": kinds[type(model)], "state_dict": state}, path)


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a prior saved by :func:`save_prior`, safely and strictly, fp32, eval mode, frozen."""
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or not {"kind", "state_dict"} <= set(saved):
        raise ValueError(
            f"prior file {path}: expected a dict with 'kind' and 'state_dict' (as "
            "vqclip.models.prior.save_prior writes)"
        )
    kinds, kind, state = prior_kinds(), saved["kind"], saved["state_dict"]
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(
            f"prior file {path}: unknown kind {str(kind)[:60]!r}; known kinds are {list(kinds)}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):  # fmt: skip
        raise ValueError(f"prior file {path}: its state_dict is not names mapped to tensors")
    check_fits(kinds[kind], state, "prior", Path(path), f"of its kind {kind!r}")
    model = kinds[kind]()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().requires_grad_(False).to(device)


def _letterbox(images: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """(B, 3, H, W) -> (B, 3, S, S) with S = max(H, W): the images centred in a square filled
    with the median colour of each one's border (its background, for the kind of image a prior
    knows), and the rows and columns where each image lies in it."""
    height, width = images.shape[-2:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    where = (slice(top, top + height), slice(left, left + width))
    if height == width:
        return images, where
    edges = (images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1])
    fill = torch.cat(edges, -1).median(-1).values  # (B, 3)
    square = fill[..., None, None].expand(*images.shape[:2], side, side).clone()
    square[..., where[0], where[1]] = images
    return square, where


def _as_read(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Square images as the prior reads them: at its ``resolution``, resized (antialiased)."""
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, (resolution, resolution), mode="bilinear", antialias=True)


@torch.no_grad()
def redraw(images: torch.Tensor, prior: nn.Module, score: Score | None = None) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): the prior's redrawing of each image.

    A prior with ``alternatives(images, size) -> (B, K, 3, size, size)`` offers several
    redrawings it finds plausible; given a ``score`` (the loop's prompt loss), each image gets
    the one it scores lowest: the prior keeps images near the kind it knows, the prompt picks
    which.
    """
    square, (rows, cols) = _letterbox(images.float())
    read, side = _as_read(square, prior.resolution), square.shape[-1]
    if score is None or not hasattr(prior, "alternatives"):
        return prior(read, side)[..., rows, cols]
    options = prior.alternatives(read, side)[..., rows, cols]  # (B, K, 3, H, W)
    losses = score(options.flatten(0, 1)).view(options.shape[:2])
    return options[torch.arange(len(options), device=options.device), losses.argmin(1)]


def prior_loss(
    image: torch.Tensor,
    prior: nn.Module,
    weight: float,
    score: Score | None = None,
    params: torch.Tensor | None = None,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``weight * MSE(image, redraw(image))`` per image, the redrawing held fixed, so the pull
    moves the image toward it (times the batch size: each image's pull does not shrink).

    Given the generator's ``params`` (B, C, h, w) and its ``encode`` (images -> parameters), the
    pull is ``weight * MSE(params, encode(redrawing))`` instead: straight toward the parameters
    that draw the redrawing. Through a VQGAN's decoder, one candidate pulled in pixels ended with
    the redrawing's shape in about 60% of runs, pulled in its latent in 79-90% (docs/shapes.md,
    "The pull in the latent"); for RGB parameters the two are one.
    """
    image = image.float()
    target = redraw(image, prior, score)
    if params is None or encode is None:
        return F.mse_loss(image, target) * (weight * image.shape[0])
    with torch.no_grad():
        target = encode(target).float()
    return F.mse_loss(params.float(), target) * (weight * image.shape[0])


@torch.no_grad()
def prior_pull(
    images: torch.Tensor, prior: nn.Module, weight: float, score: Score | None = None
) -> torch.Tensor:
    """(B, 3, H, W) -> (B,): each image's ``weight * MSE`` to its redrawing, the terms that
    :func:`prior_loss` adds up (what ranks candidates)."""
    images = images.float()
    return (images - redraw(images, prior, score)).pow(2).flatten(1).mean(1) * weight
