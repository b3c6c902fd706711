"""Losses: spherical distance to weighted prompt embeddings (with stops), and the init pull."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "blend_targets",
    "Targets", "spherical_dist_loss", "own_region", "prompt_losses", "init_loss", "smoothness_loss",
]  # fmt: skip


@dataclass(frozen=True)
class Targets:
    """All prompt embeddings, flattened: prompt ``p`` owns rows where ``owner == p``."""

    embeds: torch.Tensor  # (K, D) unit vectors, K >= number of prompts
    owner: torch.Tensor  # (K,) index of the prompt each row belongs to
    weights: torch.Tensor  # (P,) signed prompt weights
    stops: torch.Tensor  # (P,) distance below which a prompt stops pulling
    names: tuple[str, ...]  # (P,) for reports
    region: torch.Tensor | None = None  # (P,) the cutouts' region each prompt is scored on
    groups: int = 1  # the cutouts come in this many regions' groups, the whole image first

    @property
    def rows(self) -> torch.Tensor:
        """(P,) how many rows each prompt owns (computed once: bincount would sync a GPU)."""
        if "_rows" not in self.__dict__:
            counts = torch.bincount(self.owner, minlength=self.count).to(self.embeds.dtype)
            object.__setattr__(self, "_rows", counts)
        return self.__dict__["_rows"]

    @property
    def count(self) -> int:
        return len(self.names)


def blend_targets(first: Targets, second: Targets, share: float) -> Targets:
    """Both prompt lists at once, ``first``'s weights scaled by ``1 - share`` and ``second``'s
    by ``share``: the loss is the two lists' losses interpolated (an animation's blend from one
    keyed prompt to the next)."""
    if first.groups != second.groups:
        raise ValueError("prompt_blend: the two prompt lists are cut into different regions")
    regions = [t.region if t.region is not None else torch.zeros_like(t.weights, dtype=torch.long) for t in (first, second)]  # fmt: skip
    has_region = first.region is not None or second.region is not None
    return Targets(
        embeds=torch.cat([first.embeds, second.embeds]),
        owner=torch.cat([first.owner, second.owner + first.count]),
        weights=torch.cat([first.weights * (1 - share), second.weights * share]),
        stops=torch.cat([first.stops, second.stops]),
        names=(*first.names, *second.names),
        region=torch.cat(regions) if has_region else None,
        groups=first.groups,
    )


def spherical_dist_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit-normalised ``x`` and ``y`` (last dim)."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def own_region(distances: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(G * N, K) distances of the views of ``targets.groups`` regions (the whole image's
    first) -> (N, K): each target row's distances to the views of its prompt's region."""
    by_region = distances.view(targets.groups, -1, distances.shape[-1])  # (G, N, K)
    own = targets.region[targets.owner]  # (K,)
    return by_region.gather(0, own.expand(1, by_region.shape[1], -1)).squeeze(0)


def prompt_losses(image_embeds: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(N, D) cutout embeddings -> (P,) losses, one per prompt.

    Each prompt's loss is ``|w| * mean(sign(w) * distance)``; once the signed distance falls
    below the prompt's stop, its gradient is cut (the classic notebooks' semantics).
    """
    distances = spherical_dist_loss(image_embeds[:, None], targets.embeds[None])  # (N, K)
    if targets.region is None:
        per_row = distances.mean(0)  # (K,)
    else:  # the cutouts come region by region: each row is scored on its prompt's region's
        per_row = own_region(distances, targets).mean(0)  # (K,)
    sums = torch.zeros(targets.count, device=per_row.device).index_add(0, targets.owner, per_row)
    signed = sums / targets.rows * targets.weights.sign()  # (P,)
    gated = torch.where(signed > targets.stops, signed, signed.detach())
    return targets.weights.abs() * gated


def init_loss(latent: torch.Tensor, start: torch.Tensor, weight: float) -> torch.Tensor:
    """Pull the latent toward its starting point (the init image's latent): ``w/2 * MSE``."""
    return F.mse_loss(latent, start) * (weight / 2)


def smoothness_loss(image: torch.Tensor, weight: float) -> torch.Tensor:
    """Total variation of (B, 3, H, W): mean squared difference of neighbouring pixels, times
    ``weight`` and the batch size (so that each image's pull does not shrink with the batch).

    It favours flat regions with short borders over speckled texture.
    """
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean()
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()
    return (dx + dy) * (weight * image.shape[0])
