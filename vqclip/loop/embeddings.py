"""Prompts -> target embeddings: texts and images through the perceptor, and noise."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vqclip.core.prompts import Prompt
from vqclip.loop.cutouts import make_cutouts
from vqclip.loop.losses import Targets
from vqclip.loop.perceptors import Perceptor

__all__ = ["embed_texts", "embed_image", "embed_noise", "build_targets", "similarity"]


@torch.no_grad()
def embed_texts(perceptor: Perceptor, texts: list[str]) -> torch.Tensor:
    """Texts -> (N, D) unit embeddings."""
    return F.normalize(perceptor.encode_text(texts), dim=-1)


@torch.no_grad()
def embed_image(
    perceptor: Perceptor, image: torch.Tensor, cutn: int, rng: torch.Generator
) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> (cutn, D) unit embeddings of its cutouts, as the loop sees it."""
    cutouts = make_cutouts(image, perceptor.input_resolution, cutn, 1.0, rng)
    return F.normalize(perceptor.encode_image(cutouts), dim=-1)


def embed_noise(seed: int, dim: int, device: torch.device) -> torch.Tensor:
    """A random (1, D) unit embedding from its own seed (the classic noise prompts)."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(1, dim, generator=generator), dim=-1).to(device)


def build_targets(
    perceptor: Perceptor,
    text_prompts: list[Prompt],
    image_prompts: list[Prompt],
    noise_prompts: list[tuple[int, float]],
    load: Callable[[str], torch.Tensor],
    cutn: int,
    rng: torch.Generator,
    device: torch.device,
    regions: dict[str, int] | None = None,
) -> Targets:
    """Embed every prompt into one :class:`Targets`; ``load`` reads an image prompt's file.
    ``regions``: each region's group among the cutouts (the whole image is group 0), for the
    prompts that name one; None when no prompt does."""
    blocks, weights, stops, names = [], [], [], []
    if text_prompts:
        texts = embed_texts(perceptor, [p.text for p in text_prompts])  # (P, D)
        blocks += list(texts.split(1))
    for prompt in image_prompts:
        blocks.append(embed_image(perceptor, load(prompt.text).to(device), cutn, rng))
    for prompt in [*text_prompts, *image_prompts]:
        name = prompt.text + (f" @{prompt.region}" if prompt.region else "")
        weights.append(prompt.weight), stops.append(prompt.stop), names.append(name)
    for seed, weight in noise_prompts:
        blocks.append(embed_noise(seed, perceptor.embed_dim, device))
        weights.append(weight), stops.append(float("-inf")), names.append(f"noise:{seed}")
    owner = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(blocks)])
    region = None
    if regions:
        prompts = [*text_prompts, *image_prompts]
        groups = [regions[p.region] if p.region else 0 for p in prompts] + [0] * len(noise_prompts)
        region = torch.tensor(groups, dtype=torch.long, device=device)
    return Targets(
        embeds=torch.cat(blocks).to(device),
        owner=owner.to(device),
        weights=torch.tensor(weights, device=device, dtype=torch.float32),
        stops=torch.tensor(stops, device=device, dtype=torch.float32),
        names=tuple(names),
        region=region,
        groups=len(regions) + 1 if regions else 1,
    )


@torch.no_grad()
def similarity(perceptor: Perceptor, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Cosine similarity of whole images (B, 3, H, W) in [0, 1] to texts: (B, T)."""
    size = perceptor.input_resolution
    resized = F.interpolate(
        images.to(perceptor.device), size=(size, size), mode="bilinear", antialias=True
    )
    image_embeds = F.normalize(perceptor.encode_image(resized), dim=-1)
    return image_embeds @ embed_texts(perceptor, texts).T
