"""Prompts -> target embeddings: text through CLIP's text tower, images through cutouts, noise."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vqclip.cutouts import make_cutouts, normalize
from vqclip.losses import Targets
from vqclip.models import tokenize
from vqclip.prompts import Prompt

__all__ = ["embed_texts", "embed_image", "embed_noise", "build_targets", "similarity"]


@torch.no_grad()
def embed_texts(
    clip_model: torch.nn.Module, texts: list[str], device: torch.device
) -> torch.Tensor:
    """Texts -> (N, D) unit embeddings."""
    tokens = tokenize(clip_model, texts).to(device)
    return F.normalize(clip_model.encode_text(tokens).float(), dim=-1)


@torch.no_grad()
def embed_image(
    clip_model: torch.nn.Module, image: torch.Tensor, cutn: int, generator: torch.Generator
) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> (cutn, D) unit embeddings of its cutouts, as the loop sees it."""
    size = clip_model.visual.input_resolution
    cutouts = make_cutouts(image, size, cutn, 1.0, generator)
    return F.normalize(clip_model.encode_image(normalize(cutouts)).float(), dim=-1)


def embed_noise(seed: int, dim: int, device: torch.device) -> torch.Tensor:
    """A random (1, D) unit embedding from its own seed (the classic noise prompts)."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(1, dim, generator=generator), dim=-1).to(device)


def build_targets(
    clip_model: torch.nn.Module,
    text_prompts: list[Prompt],
    image_prompts: list[Prompt],
    noise_prompts: list[tuple[int, float]],
    load: Callable[[str], torch.Tensor],
    cutn: int,
    generator: torch.Generator,
    device: torch.device,
) -> Targets:
    """Embed every prompt into one :class:`Targets`; ``load`` reads an image prompt's file."""
    blocks, weights, stops, names = [], [], [], []
    if text_prompts:
        texts = embed_texts(clip_model, [p.text for p in text_prompts], device)  # (P, D)
        blocks += list(texts.split(1))
    for prompt in image_prompts:
        blocks.append(embed_image(clip_model, load(prompt.text).to(device), cutn, generator))
    for prompt in [*text_prompts, *image_prompts]:
        weights.append(prompt.weight), stops.append(prompt.stop), names.append(prompt.text)
    dim = clip_model.text_projection.shape[1]
    for seed, weight in noise_prompts:
        blocks.append(embed_noise(seed, dim, device))
        weights.append(weight), stops.append(float("-inf")), names.append(f"noise:{seed}")
    owner = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(blocks)])
    return Targets(
        embeds=torch.cat(blocks).to(device),
        owner=owner.to(device),
        weights=torch.tensor(weights, device=device, dtype=torch.float32),
        stops=torch.tensor(stops, device=device, dtype=torch.float32),
        names=tuple(names),
    )


@torch.no_grad()
def similarity(clip_model: torch.nn.Module, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Cosine similarity of whole images (B, 3, H, W) in [0, 1] to texts: (B, T)."""
    size = clip_model.visual.input_resolution
    device = next(clip_model.parameters()).device
    resized = F.interpolate(images.to(device), size=(size, size), mode="bilinear", antialias=True)
    image_embeds = F.normalize(clip_model.encode_image(normalize(resized)).float(), dim=-1)
    return image_embeds @ embed_texts(clip_model, texts, device).T
