"""Generators: the VQGAN latent and the pixels generator behind one interface, every feature."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import png_pixels
from vqclip.core.config import GenerationConfig
from vqclip.frontends import cli
from vqclip.loop.embeddings import similarity
from vqclip.loop.generators import PixelGenerator, compose_latent
from vqclip.loop.optimise import start_state
from vqclip.loop.perceptors import Perceptor
from vqclip.run.build import load_models, prepare, resolve_device
from vqclip.run.driver import generate, resume


@pytest.fixture
def pixels_config(tiny_config: GenerationConfig) -> GenerationConfig:
    return tiny_config.replace(generator="pixels", step_size=0.02)


def test_pixels_encode_decode_and_clamp_at_every_scale() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.equal(PixelGenerator(1).decode(PixelGenerator(1).encode(image)), image)
    coarse = PixelGenerator(4)
    params = coarse.encode(image)  # (2, 3, 8, 8): each block's mean colour
    assert params.shape == (2, 3, 8, 8)
    assert torch.allclose(params[0, :, 0, 0], image[0, :, :4, :4].mean((1, 2)))
    blocks = coarse.decode(params)
    assert blocks.shape == image.shape and torch.equal(
        blocks[..., :4, :4].amax((2, 3)), blocks[..., 0, 0]
    )
    assert coarse.random(1, 32, 32, g).shape == (1, 3, 8, 8)
    state = start_state(params * 3 - 1, "Adam", 0.1, g, levels=2)  # out of range on purpose
    coarse.clamp(state.levels)
    composed = compose_latent(state.levels)
    assert composed.min() >= 0 and composed.max() <= 1 + 1e-6


def test_pixels_steer_toward_the_prompt(pixels_config: GenerationConfig) -> None:
    config = pixels_config.replace(max_iterations=30, start="random")
    result = generate(config)
    _, (perceptor,) = load_models(config, resolve_device("cpu"))
    clip_model = perceptor.model
    loop, state = prepare(config, resolve_device("cpu"))
    start = loop.generator.decode(state.latent)
    perceptor = Perceptor(clip_model)
    before = float(similarity(perceptor, start, [config.prompts])[0, 0])
    after = float(similarity(perceptor, result.image, [config.prompts])[0, 0])
    assert after > before + 0.02, (before, after)
    assert not torch.equal(result.image, generate(config.replace(generator="vqgan")).image)


def test_pixels_from_the_cli_with_init_image_story_zoom_and_batch(
    pixels_config: GenerationConfig, tmp_path: Path, tiny_models: dict
) -> None:
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[8:24, 8:24] = (220, 30, 30)
    Image.fromarray(pixels).save(tmp_path / "init.png")
    flags = [
        "--generator", "pixels", "--pixel_scale", "2", "--vqgan", str(tiny_models["yaml"]),
        "--clip_model", str(tiny_models["clip"]), "--width", "32", "--height", "32", "--cutn",
        "4", "--max_iterations", "6", "--display_frequency", "2", "--seed", "3", "--device",
        "cpu", "--precision", "fp32", "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    runs = []
    for extra in (
        ["a red square", "--init_image", str(tmp_path / "init.png"), "--init_weight", "50"],
        ["a red circle ^ a blue one", "--zoom_every", "3"],
        ["--batch_prompts", "a red circle", "a blue square"],
    ):
        before = set((tmp_path / "out").glob("*"))
        cli.main(["generate", *extra, *flags])
        (run_dir,) = set((tmp_path / "out").glob("*")) - before
        runs.append(run_dir)
    held, story, batch = runs
    start = np.asarray(Image.open(tmp_path / "init.png"), float)
    drift = np.abs(png_pixels(held / "final.png").astype(float) - start).mean()
    assert drift < 20  # the init pull keeps the image near the init image's pixels
    assert len(list((story / "frames").iterdir())) == 4
    assert (batch / "final-0.png").exists() and (batch / "final-1.png").exists()
    assert GenerationConfig.from_json((held / "config.json").read_text()).pixel_scale == 2


def test_a_stopped_pixels_run_resumes_to_the_same_bits(pixels_config: GenerationConfig) -> None:
    config = pixels_config.replace(max_iterations=8, display_frequency=4, latent_levels=2)
    whole = generate(config)
    part = generate(config.replace(max_iterations=4))
    resumed = resume(part.run_dir, max_iterations=8)
    assert torch.equal(resumed.image, whole.image)


def test_pixels_restyle_a_video(pixels_config: GenerationConfig, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * k + 40, np.uint8)).save(frames / f"{k:03d}.png")
    result = generate(
        pixels_config.replace(init_video=str(frames), max_iterations=2, init_weight=1.0)
    )
    assert [p.name for p in result.frames] == ["000000.png", "000001.png"]


def test_the_factor_is_checked_for_the_generator(tiny_config: GenerationConfig) -> None:
    from vqclip.models.acquire import acquire
    from vqclip.run.build import check_inputs

    with pytest.raises(ValueError, match="width: 30 is not a multiple of pixel_scale 4"):
        config = tiny_config.replace(generator="pixels", pixel_scale=4, width=30)
        check_inputs(config, acquire(config))
    with pytest.raises(ValueError, match="generator: unknown value 'gan'"):
        tiny_config.replace(generator="gan")


def test_each_term_reports_its_own_loss(tiny_config: GenerationConfig) -> None:
    seen = []
    config = tiny_config.replace(max_iterations=2, init_weight=0.5, smoothness=1.0)
    generate(config, callback=lambda info: seen.append(info))
    terms = seen[-1]["terms"]
    assert list(terms) == ["prompts", "init", "smoothness"]
    total = sum(terms.values())
    assert torch.allclose(total, seen[-1]["loss"])
    assert float(terms["smoothness"]) > 0
