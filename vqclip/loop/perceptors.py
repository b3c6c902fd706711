"""Perceptors: CLIP as the loop sees it, an image and a text encoder into one embedding space.

The loop and the prompt embeddings go through :class:`Perceptor` only (its input resolution,
its normalisation, its two encoders), so that another CLIP family, or several at once, is a new
perceptor rather than a change to the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vqclip.models.vqgan_clip import tokenize

__all__ = ["CLIP_MEAN", "CLIP_STD", "Perceptor", "normalize"]

# OpenAI CLIP's input normalisation (its training images' per-channel mean and deviation).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(
    image: torch.Tensor, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1] -> CLIP's input normalisation."""
    mean_ = torch.tensor(mean, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    std_ = torch.tensor(std, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image - mean_) / std_


@dataclass(frozen=True, eq=False)
class Perceptor:
    """A CLIP as the loop uses it: OpenAI's (``clip.model.CLIP``) or OpenCLIP's, which share
    the encoders' names and shapes but not always the input normalisation or the tokenizer."""

    model: nn.Module
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    name: str = "clip"  # how reports name its loss in an ensemble
    tokenizer: Callable[[list[str]], torch.Tensor] | None = None  # None: OpenAI CLIP's

    @property
    def input_resolution(self) -> int:
        """The side of the square images the image encoder reads."""
        visual = self.model.visual
        size = getattr(visual, "input_resolution", None) or visual.image_size  # OpenCLIP's
        return size if isinstance(size, int) else size[0]

    @property
    def embed_dim(self) -> int:
        """The size of the shared embedding."""
        return self.model.text_projection.shape[1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [0, 1], S = ``input_resolution`` -> (N, E) fp32 embeddings (not
        unit length); differentiable, under the caller's autocast."""
        return self.model.encode_image(normalize(images, self.mean, self.std)).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (N, E) fp32 embeddings (not unit length)."""
        tokens = tokenize(self.model, texts) if self.tokenizer is None else self.tokenizer(texts)
        return self.model.encode_text(tokens.to(self.device)).float()
