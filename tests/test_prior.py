"""The image prior: saved and loaded safely and strictly, and a pull toward its redrawing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vqclip.prior import Autoencoder, load_prior, prior_loss, save_prior


def _prior(seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(code_dim=8).eval()


def test_save_and_load_round_trip_in_fp16(tmp_path: Path) -> None:
    model = _prior()
    save_prior(model, tmp_path / "prior.pt")
    loaded = load_prior(tmp_path / "prior.pt")
    assert loaded.code_dim == 8 and loaded.resolution == 64
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.half().float()), key
    assert not any(p.requires_grad for p in loaded.parameters())


def test_a_file_that_is_not_a_prior_is_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected a dict with 'code_dim', 'resolution'"):
        load_prior(tmp_path / "other.pt")
    saved = {"code_dim": 9, "resolution": 64, "state_dict": _prior().state_dict()}
    torch.save(saved, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="does not match its architecture"):
        load_prior(tmp_path / "mismatch.pt")


def test_the_pull_moves_an_image_toward_the_redrawing() -> None:
    prior = _prior()
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    image.requires_grad_(True)
    loss = prior_loss(image, prior, weight=3.0)
    (grad,) = torch.autograd.grad(loss, image)
    with torch.no_grad():
        redrawn = prior(image)
    # The redrawing is held fixed: the gradient is exactly that of 3 * 2 * MSE toward it.
    expected = 3.0 * 2 * 2 * (image - redrawn) / image.numel()
    assert torch.allclose(grad, expected, atol=1e-9)
    stepped = (image - 0.1 * grad.sign()).detach()
    assert (stepped - redrawn).pow(2).mean() < (image.detach() - redrawn).pow(2).mean()


def test_the_pull_refuses_images_of_another_size() -> None:
    with pytest.raises(ValueError, match="prior: works on 64x64 images, got 32x48"):
        prior_loss(torch.rand(1, 3, 48, 32), _prior(), 1.0)
