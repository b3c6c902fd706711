"""Prompts to targets: text, image and noise prompts in one Targets, seeded and unit length."""

from pathlib import Path

import pytest
import torch

from vqclip.core.prompts import Prompt
from vqclip.loop.embeddings import build_targets, embed_noise, embed_texts
from vqclip.loop.losses import Targets
from vqclip.loop.perceptors import Perceptor
from vqclip.models.vqgan_clip import load_clip

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clip_model(tiny_models: dict[str, Path]) -> torch.nn.Module:
    return load_clip(tiny_models["clip"])


def _image(path: str) -> torch.Tensor:
    """A stand-in reader (no file needed): a ramp, so that different cutouts differ."""
    value = {"red.png": 0.9, "dark.png": 0.3}[path]
    ramp = torch.linspace(0, value, 64)  # (W,): larger than CLIP's 32, so crops vary
    return ramp.expand(1, 3, 64, 64) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)


def _build(clip_model: torch.nn.Module, seed: int = 0) -> Targets:
    return build_targets(
        Perceptor(clip_model),
        [Prompt("a red circle", 2.0), Prompt("blurry", -0.5, 0.3)],
        [Prompt("red.png", 0.7), Prompt("dark.png")],
        [(11, 0.25)],
        _image,
        4,
        torch.Generator().manual_seed(seed),
        CPU,
    )


def test_every_prompt_owns_its_rows_with_its_weight_and_stop(clip_model: torch.nn.Module) -> None:
    targets = _build(clip_model)
    # two text rows, then cutn=4 rows per image prompt, then one noise row
    assert targets.owner.tolist() == [0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4]
    assert targets.names == ("a red circle", "blurry", "red.png", "dark.png", "noise:11")
    torch.testing.assert_close(targets.weights, torch.tensor([2.0, -0.5, 0.7, 1.0, 0.25]))
    assert targets.stops[1] == pytest.approx(0.3) and targets.stops[0] == -float("inf")
    torch.testing.assert_close(targets.embeds.norm(dim=-1), torch.ones(11))
    torch.testing.assert_close(targets.rows, torch.tensor([1.0, 1.0, 4.0, 4.0, 1.0]))
    texts = embed_texts(Perceptor(clip_model), ["a red circle", "blurry"])
    torch.testing.assert_close(targets.embeds[:2], texts)


def test_image_cutouts_follow_the_generator_and_noise_its_own_seed(
    clip_model: torch.nn.Module,
) -> None:
    first, again, other = _build(clip_model), _build(clip_model), _build(clip_model, seed=1)
    assert torch.equal(first.embeds, again.embeds)
    assert not torch.equal(first.embeds[2:10], other.embeds[2:10])  # other cutouts
    assert torch.equal(first.embeds[10], other.embeds[10])  # the noise prompt's own seed
    assert torch.equal(embed_noise(11, 32, CPU), first.embeds[10:])
    assert not torch.equal(embed_noise(12, 32, CPU), embed_noise(11, 32, CPU))
