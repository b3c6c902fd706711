"""Quantisation: the nearest codes in fp32 whatever the caller's autocast, gradient straight through."""

import pytest
import torch

from vqclip.loop.latents import vector_quantize


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_quantisation_picks_the_fp32_codes_under_autocast(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(16384, 256, generator=g) * 0.3  # close codes, as a big codebook has
    latent = (torch.randn(2, 256, 16, 16, generator=g) * 0.3).requires_grad_(True)
    exact = vector_quantize(latent, codebook)
    with torch.autocast("cpu", dtype=dtype):
        fast = vector_quantize(latent, codebook)
    assert fast.dtype == torch.float32
    assert torch.equal(fast, exact)
    cells = exact.detach().permute(0, 2, 3, 1).reshape(-1, 256)
    flat = latent.detach().permute(0, 2, 3, 1).reshape(-1, 256)
    nearest = torch.cdist(flat.double(), codebook.double()).argmin(1)  # independent, in fp64
    assert torch.allclose(cells, codebook[nearest], atol=1e-6)
    fast.mul(torch.arange(256.0).view(1, 256, 1, 1)).sum().backward()
    assert torch.equal(latent.grad, torch.arange(256.0).view(1, 256, 1, 1).expand_as(latent))


def test_perlin_and_fractal_starts_are_smooth_seeded_and_in_range() -> None:
    from vqclip.loop.latents import noise_image

    for kind in ("perlin", "fractal"):
        image = noise_image(kind, 2, 48, 64, torch.Generator().manual_seed(5))
        again = noise_image(kind, 2, 48, 64, torch.Generator().manual_seed(5))
        other = noise_image(kind, 2, 48, 64, torch.Generator().manual_seed(6))
        assert torch.equal(image, again) and not torch.equal(image, other)
        assert image.shape == (2, 3, 48, 64) and image.min() >= 0 and image.max() <= 1
        assert image.amin((2, 3)).max() == 0 and image.amax((2, 3)).min() == 1  # each stretched
        neighbours = (image[..., 1:] - image[..., :-1]).abs().mean()
        white = noise_image("pixels", 2, 48, 64, torch.Generator().manual_seed(5))
        assert (
            neighbours < 0.3 * (white[..., 1:] - white[..., :-1]).abs().mean()
        )  # clouds, not grain
