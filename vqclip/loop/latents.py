"""Latents: random or encoded starts, straight-through vector quantisation, decoding to pixels."""

from __future__ import annotations

import torch

__all__ = [
    "random_latent",
    "noise_image",
    "encode_image",
    "vector_quantize",
    "clamp_with_grad",
    "decode_latent",
]


def random_latent(
    codebook: torch.Tensor, batch: int, height: int, width: int, rng: torch.Generator
) -> torch.Tensor:
    """Random codebook entries per cell, (B, D, h, w), as the classic notebooks start."""
    codes = torch.randint(
        codebook.shape[0], (batch, height, width), generator=rng, device=codebook.device
    )
    return codebook[codes].permute(0, 3, 1, 2).contiguous()


def noise_image(
    kind: str, batch: int, height: int, width: int, rng: torch.Generator
) -> torch.Tensor:
    """A random starting image, (B, 3, H, W) in [0, 1]: ``"pixels"`` of uniform noise, or a
    ``"gradient"`` between two random colours at a random angle (the classic scripts' init
    noise), drawn from ``rng``."""
    device = rng.device
    if kind == "pixels":
        return torch.rand(batch, 3, height, width, generator=rng, device=device)
    if kind != "gradient":
        raise ValueError(f"noise_image: unknown kind {kind!r}; expected 'pixels' or 'gradient'")
    colours = torch.rand(2, batch, 3, 1, 1, generator=rng, device=device)
    angle = torch.rand(batch, 1, 1, generator=rng, device=device) * (2 * torch.pi)
    y = torch.linspace(-1, 1, height, device=device).view(1, -1, 1)
    x = torch.linspace(-1, 1, width, device=device).view(1, 1, -1)
    along = x * angle.cos() + y * angle.sin()  # (B, H, W)
    t = (along - along.amin((1, 2), keepdim=True)) / (
        along.amax((1, 2), keepdim=True) - along.amin((1, 2), keepdim=True)
    ).clamp(min=1e-6)
    return torch.lerp(colours[0], colours[1], t[:, None])  # (B, 3, H, W)


def encode_image(vqgan: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> quantised latent (B, D, H/f, W/f)."""
    with torch.no_grad():
        return vqgan.encode(image * 2 - 1)


def vector_quantize(latent: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Snap each cell to its nearest code; the gradient passes straight through (VQ-VAE).

    The distances are fp32 under any autocast (codes take no gradient): in bf16 they sent 2%
    of the cells of a random 16384-code book (entries of scale 0.3) to another code.
    """
    flat = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])  # (B*h*w, D)
    with torch.no_grad(), torch.autocast(latent.device.type, enabled=False):
        flat, codebook = flat.float(), codebook.float()
        distances = (
            flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)
        )  # (B*h*w, n_embed)
    codes = distances.argmin(1)
    quantized = codebook[codes].view(latent.shape[0], *latent.shape[2:], -1).permute(0, 3, 1, 2)
    return latent + (quantized - latent).detach()


class _ClampWithGrad(torch.autograd.Function):
    """Clamp forward; backward passes the gradient unless it pushes further out of range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float) -> torch.Tensor:  # noqa: ANN001
        ctx.low, ctx.high = low, high
        ctx.save_for_backward(x)
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        outward = (x < ctx.low) & (grad > 0) | (x > ctx.high) & (grad < 0)
        return grad * ~outward, None, None


def clamp_with_grad(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Clamp to [low, high] without killing the gradient that leads back into range."""
    return _ClampWithGrad.apply(x, low, high)


def decode_latent(vqgan: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """Quantise (fp32) and decode: (B, D, h, w) -> (B, 3, H, W) in [0, 1], differentiable."""
    quantized = vector_quantize(latent.float(), vqgan.codebook)
    pixels = vqgan.decode(quantized)  # roughly [-1, 1]; runs under the caller's autocast
    return clamp_with_grad(pixels.float().add(1).div(2), 0.0, 1.0)
