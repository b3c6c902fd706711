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

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.core.plugins import load_plugins
from vqclip.models.checkpoints import check_fits, load_checkpoint

__all__ = [
    "register_prior_kind", "prior_kinds", "load_prior", "save_prior", "Scores", "box_slices",
    "letterbox", "redraw", "prior_loss", "prior_pull",
]  # fmt: skip

Score = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) -> (N,), lower is better
Box = tuple[float, float, float, float]  # left, top, right, bottom as fractions of the image


@dataclass(frozen=True)
class Scores:
    """What picks among a prior's alternatives: ``whole`` scores whole images (None: every
    prompt names a region, and the image outside them is left as it is); each of ``regions``
    is a box of the image and the loss of the prompts that name it, scored on images of that
    box alone (a region prompt's box is redrawn as a scene of its own)."""

    whole: Score | None
    regions: tuple[tuple[Box, Score], ...] = ()


def box_slices(box: Box, height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of ``box`` in an image of ``height`` by ``width`` (at least one
    pixel each way)."""
    left, top, right, bottom = box
    x0, y0 = min(int(left * width), width - 1), min(int(top * height), height - 1)
    x1, y1 = max(x0 + 1, math.ceil(right * width)), max(y0 + 1, math.ceil(bottom * height))
    return slice(y0, y1), slice(x0, x1)


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


def letterbox(images: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, slice]]:
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
def redraw(images: torch.Tensor, prior: nn.Module, scores: Scores | None = None) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): the prior's redrawing of each image.

    A prior with ``alternatives(images, size) -> (B, K, 3, size, size)`` offers several
    redrawings it finds plausible; given ``scores`` (the loop's prompt loss), each image gets
    the one it scores lowest: the prior keeps images near the kind it knows, the prompt picks
    which. Each of the scores' regions is then redrawn alone, as the prior reads that box,
    over the whole image's redrawing (or, where no prompt is for the whole image, over the
    regions' background): a shape prompted into the left half is drawn whole inside it.
    """
    images = images.float()
    height, width = images.shape[-2:]
    boxes = [(box_slices(box, height, width), score) for box, score in scores.regions] if scores else []  # fmt: skip
    drawn = [(box, _redraw(images[..., box[0], box[1]], prior, score)) for box, score in boxes]
    if scores is not None and scores.whole is None:  # every prompt names a region: the rest of
        crops = [square[..., rows, cols] for _, (square, (rows, cols)) in drawn]  # the image is
        target = _border_fill(crops).expand_as(images).clone()  # their background, and
        _spill(target, drawn)  # their scenes where they run on past their boxes
    else:
        square, (rows, cols) = _redraw(images, prior, scores.whole if scores else None)
        target = square[..., rows, cols]
    for (box_rows, box_cols), (square, (rows, cols)) in drawn:
        target[..., box_rows, box_cols] = square[..., rows, cols]
    return target


Drawn = tuple[tuple[slice, slice], tuple[torch.Tensor, tuple[slice, slice]]]


def _spill(target: torch.Tensor, drawn: list[Drawn]) -> None:
    """Each region's redrawing as a whole square scene, placed where its box lies in it, on
    the pixels no region's box holds (in place): a shape near its box's edge is drawn whole,
    not cut flat there, where nothing else is prompted."""
    height, width = target.shape[-2:]
    free = torch.ones(height, width, dtype=torch.bool, device=target.device)
    for (box_rows, box_cols), _ in drawn:
        free[box_rows, box_cols] = False
    for (box_rows, box_cols), (square, (rows, cols)) in drawn:
        top, left, side = box_rows.start - rows.start, box_cols.start - cols.start, square.shape[-1]
        y0, y1, x0, x1 = max(top, 0), min(top + side, height), max(left, 0), min(left + side, width)
        if y0 >= y1 or x0 >= x1:
            continue
        patch = square[..., y0 - top : y1 - top, x0 - left : x1 - left]
        target[..., y0:y1, x0:x1] = torch.where(free[y0:y1, x0:x1], patch, target[..., y0:y1, x0:x1])  # fmt: skip


def _border_fill(images: list[torch.Tensor]) -> torch.Tensor:
    """(B, 3, 1, 1): the median colour of all the images' borders, image by image."""
    edges = [e for i in images for e in (i[..., 0, :], i[..., -1, :], i[..., :, 0], i[..., :, -1])]
    return torch.cat(edges, -1).median(-1).values[..., None, None]


def _redraw(
    images: torch.Tensor, prior: nn.Module, score: Score | None
) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """The redrawing of the images letterboxed into a square (the best by ``score`` of the
    prior's alternatives, judged on the images' own part), and where the images lie in it."""
    square, (rows, cols) = letterbox(images)
    read, side = _as_read(square, prior.resolution), square.shape[-1]
    if score is None or not hasattr(prior, "alternatives"):
        return prior(read, side), (rows, cols)
    options = prior.alternatives(read, side)  # (B, K, 3, S, S)
    losses = score(options[..., rows, cols].flatten(0, 1)).view(options.shape[:2])
    return options[torch.arange(len(options), device=options.device), losses.argmin(1)], (
        rows,
        cols,
    )


def prior_loss(
    image: torch.Tensor,
    prior: nn.Module,
    weight: float,
    scores: Scores | None = None,
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
    target = redraw(image, prior, scores)
    if params is None or encode is None:
        return F.mse_loss(image, target) * (weight * image.shape[0])
    with torch.no_grad():
        target = encode(target).float()
    return F.mse_loss(params.float(), target) * (weight * image.shape[0])


@torch.no_grad()
def prior_pull(
    images: torch.Tensor, prior: nn.Module, weight: float, scores: Scores | None = None
) -> torch.Tensor:
    """(B, 3, H, W) -> (B,): each image's ``weight * MSE`` to its redrawing, the terms that
    :func:`prior_loss` adds up (what ranks candidates)."""
    images = images.float()
    return (images - redraw(images, prior, scores)).pow(2).flatten(1).mean(1) * weight
