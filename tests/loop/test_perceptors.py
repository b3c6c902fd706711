"""Perceptors: several CLIPs at once, each at its own input size, weighted and reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import png_pixels

from vqclip.core.config import GenerationConfig
from vqclip.loop.optimise import make_views, step
from vqclip.run.build import prepare, resolve_device
from vqclip.run.driver import generate


def _ensemble(tiny_config: GenerationConfig, tiny_models: dict[str, Path], weight: float) -> GenerationConfig:  # fmt: skip
    return tiny_config.replace(clip_model=(tiny_config.clip_model, f"{tiny_models['clip48']}:{weight}"))  # fmt: skip


def test_a_second_model_of_weight_0_changes_no_bit(
    tiny_config: GenerationConfig, tiny_models: dict[str, Path]
) -> None:
    """It is loaded, cut for and scored every step, and reported; the image is the one model's."""
    config = tiny_config.replace(best_of=2, init_weight=0.5)
    reports = []
    alone = generate(config)
    paired = generate(_ensemble(config, tiny_models, 0), callback=reports.append)
    assert (png_pixels(paired.finals[0]) == png_pixels(alone.finals[0])).all()
    names = [f"prompts:{tiny_models['clip48']}", f"prompts:{config.clip_model}"]
    assert set(names) <= set(reports[0]["terms"])
    assert float(reports[-1]["terms"][names[0]]) == 0.0  # its weighted share
    heard = generate(_ensemble(config, tiny_models, 0.5))
    assert not (png_pixels(heard.finals[0]) == png_pixels(alone.finals[0])).all()


def test_each_perceptor_sees_the_same_crops_at_its_own_size(
    tiny_config: GenerationConfig, tiny_models: dict[str, Path]
) -> None:
    config = _ensemble(tiny_config.replace(augments=(), cutn=4), tiny_models, 1)
    loop, state = prepare(config, resolve_device("cpu"))
    ramp = torch.linspace(0, 1, 64)
    image = torch.stack([ramp.expand(64, 64), ramp[:, None].expand(64, 64), ramp.outer(ramp)])
    small, large = make_views(loop, state, image[None])  # a smooth image: crops resample alike
    assert small.shape == (4, 3, 32, 32) and large.shape == (4, 3, 48, 48)
    small, large = (torch.nn.functional.adaptive_avg_pool2d(v, 8) for v in (small, large))
    same_places = (large - small).abs().mean()  # pooled, the per-pixel noise averages out
    other_places = (large - small.roll(1, 0)).abs().mean()
    assert same_places < other_places / 3, (same_places, other_places)


def test_the_ensemble_config_is_a_tuple_or_a_string() -> None:
    config = GenerationConfig(prompts="a", clip_model=("ViT-B/32", "RN50:0.5"))
    assert config.clip_model == "ViT-B/32 + RN50:0.5"
    assert config.clip_models() == [("ViT-B/32", 1.0), ("RN50", 0.5)]
    assert GenerationConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [("a:-1", "weight >= 0"), ("a + ", "''"), ("a:0", "every weight"), ("a:inf", "weight >= 0")],
)
def test_a_malformed_ensemble_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="clip_model") as error:
        GenerationConfig(prompts="a", clip_model=text)
    assert message in str(error.value)


def test_an_ensemble_steps_with_every_model_in_the_gradient(
    tiny_config: GenerationConfig, tiny_models: dict[str, Path]
) -> None:
    grads = []
    for weight in (0.0, 1.0):
        loop, state = prepare(_ensemble(tiny_config, tiny_models, weight), resolve_device("cpu"))
        step(loop, state)
        grads.append(state.levels[-1].grad.clone())
    assert not torch.equal(grads[0], grads[1])
