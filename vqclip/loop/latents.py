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
    """A random starting image, (B, 3, H, W) in [0, 1], drawn from ``rng``: ``"pixels"`` of
    uniform noise; a ``"gradient"`` between two random colours at a random angle (the classic
    scripts' init noise); ``"perlin"`` gradient noise, 4 octaves each of half the last's
    amplitude (Disco Diffusion's Perlin start); ``"fractal"`` noise whose amplitude falls as
    1/f² (clouds at every scale)."""
    device = rng.device
    if kind == "pixels":
        return torch.rand(batch, 3, height, width, generator=rng, device=device)
    if kind == "perlin":
        return _normalised(sum(0.5**k * _perlin(batch, height, width, 2 ** (k + 1), rng) for k in range(4)))  # fmt: skip
    if kind == "fractal":
        return _normalised(_fractal(batch, height, width, rng))
    if kind != "gradient":
        raise ValueError(f"noise_image: unknown kind {kind!r}; expected pixels, gradient, perlin or fractal")  # fmt: skip
    colours = torch.rand(2, batch, 3, 1, 1, generator=rng, device=device)
    angle = torch.rand(batch, 1, 1, generator=rng, device=device) * (2 * torch.pi)
    y = torch.linspace(-1, 1, height, device=device).view(1, -1, 1)
    x = torch.linspace(-1, 1, width, device=device).view(1, 1, -1)
    along = x * angle.cos() + y * angle.sin()  # (B, H, W)
    t = (along - along.amin((1, 2), keepdim=True)) / (
        along.amax((1, 2), keepdim=True) - along.amin((1, 2), keepdim=True)
    ).clamp(min=1e-6)
    return torch.lerp(colours[0], colours[1], t[:, None])  # (B, 3, H, W)


def _normalised(image: torch.Tensor) -> torch.Tensor:
    """Each image's values stretched to [0, 1], per channel."""
    low, high = image.amin((2, 3), keepdim=True), image.amax((2, 3), keepdim=True)
    return (image - low) / (high - low).clamp_min(1e-6)


def _perlin(batch: int, height: int, width: int, cells: int, rng: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) Perlin gradient noise on a grid of ``cells`` across the longer side: a
    random unit gradient at each grid corner, each pixel the smoothstep blend of its four
    corners' gradients dotted with the offsets to them."""
    device = rng.device
    rows, cols = max(1, round(cells * height / max(height, width))), max(1, round(cells * width / max(height, width)))  # fmt: skip
    angles = torch.rand(batch, 3, rows + 1, cols + 1, generator=rng, device=device) * (2 * torch.pi)
    gx, gy = angles.cos(), angles.sin()
    y = (torch.arange(height, device=device) + 0.5) / height * rows
    x = (torch.arange(width, device=device) + 0.5) / width * cols
    y0, x0 = y.floor().long().clamp(max=rows - 1), x.floor().long().clamp(max=cols - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]  # (H, 1), (1, W)

    def corner(dy: int, dx: int) -> torch.Tensor:
        iy, ix = (y0 + dy)[:, None], (x0 + dx)[None, :]
        return gx[..., iy, ix] * (fx - dx) + gy[..., iy, ix] * (fy - dy)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    top = torch.lerp(corner(0, 0), corner(0, 1), fade(fx))
    bottom = torch.lerp(corner(1, 0), corner(1, 1), fade(fx))
    return torch.lerp(top, bottom, fade(fy))


def _fractal(batch: int, height: int, width: int, rng: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) noise with amplitude 1/f²: white noise shaped in the frequency domain."""
    device = rng.device
    white = torch.randn(batch, 3, height, width, generator=rng, device=device)
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    falloff = 1 / (fy.pow(2) + fx.pow(2)).clamp_min(1 / max(height, width) ** 2)
    return torch.fft.irfft2(torch.fft.rfft2(white) * falloff, s=(height, width))


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
