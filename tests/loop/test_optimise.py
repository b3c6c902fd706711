"""The loop on tiny random models: it steers, it is reproducible, init and negative weights act."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.core.config import OPTIMIZERS, GenerationConfig
from vqclip.core.images import load_image
from vqclip.loop.embeddings import similarity
from vqclip.loop.latents import decode_latent, encode_image
from vqclip.loop.optimise import run_loop, step
from vqclip.loop.optimizers import OPTIMIZER_CLASSES
from vqclip.loop.perceptors import Perceptor
from vqclip.run.build import load_models, prepare, resolve_device
from vqclip.run.driver import generate


def _sim(config: GenerationConfig, image: torch.Tensor, text: str) -> float:
    _, (perceptor,) = load_models(config, resolve_device("cpu"))
    clip_model = perceptor.model
    return float(similarity(Perceptor(clip_model), image, [text])[0, 0])


def _start_image(config: GenerationConfig) -> torch.Tensor:
    one_step = generate(
        config.replace(max_iterations=1, step_size=1e-9, output_dir=config.output_dir + "/s")
    )
    return one_step.image


# bf16 here runs on every CPU (emulated where there are no bf16 instructions); the full quality
# guard on the shapes world (test_shapes) needs hardware bf16 to finish in time.
@pytest.mark.parametrize(
    "precision, cut_method", [("fp32", "crops"), ("bf16", "crops"), ("fp32", "pooling")]
)
def test_similarity_rises_and_loss_falls(
    tiny_config: GenerationConfig, precision: str, cut_method: str
) -> None:
    config = tiny_config.replace(
        max_iterations=30, display_frequency=10, precision=precision, cut_method=cut_method
    )
    losses = []
    result = generate(config, callback=lambda info: losses.append(float(info["loss"])))
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.01
    before = _sim(config, _start_image(config), config.prompts)
    after = _sim(config, result.image, config.prompts)
    assert after > before + 0.02, (before, after)


def test_same_seed_same_bits_other_seed_differs(tiny_config: GenerationConfig) -> None:
    config = tiny_config.replace(augments=("Af", "Pe", "Ji", "Er"), max_iterations=6)
    first, second = generate(config), generate(config)
    assert torch.equal(first.image, second.image)
    assert np.array_equal(
        np.asarray(Image.open(first.run_dir / "final.png")),
        np.asarray(Image.open(second.run_dir / "final.png")),
    )
    assert first.run_dir != second.run_dir  # a second run never reuses the first's directory
    other = generate(config.replace(seed=2))
    assert not torch.equal(first.image, other.image)


@pytest.mark.parametrize("precision, hint", [("fp32", "step_size"), ("fp16", "bf16")])
def test_a_loss_that_is_not_a_number_stops_the_loop_and_says_what_to_try(
    tiny_config: GenerationConfig, precision: str, hint: str
) -> None:
    loop, state = prepare(tiny_config.replace(precision=precision), resolve_device("cpu"))
    with torch.no_grad():
        state.levels[-1][0, 0, 0, 0] = float("nan")  # one cell poisons the image and the loss
    with pytest.raises(FloatingPointError) as error:
        run_loop(loop, state, max_iterations=5, display_frequency=1)
    message = str(error.value)
    assert "nan at iteration 0" in message and f"precision {precision}" in message
    assert hint in message


def test_seed_minus_one_is_recorded(tiny_config: GenerationConfig) -> None:
    result = generate(tiny_config.replace(seed=-1, max_iterations=1))
    assert result.config.seed >= 0
    saved = GenerationConfig.from_json((result.run_dir / "config.json").read_text())
    assert saved.seed == result.config.seed
    assert torch.equal(generate(saved).image, result.image)  # the recorded seed reproduces it


def test_high_init_weight_stays_near_the_init_image(
    tiny_config: GenerationConfig, tmp_path
) -> None:
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[8:24, 8:24] = (220, 30, 30)
    Image.fromarray(pixels).save(tmp_path / "init.png")
    config = tiny_config.replace(
        init_image=str(tmp_path / "init.png"), max_iterations=20, step_size=0.2
    )
    vqgan, _ = load_models(config, resolve_device("cpu"))
    start = decode_latent(vqgan, encode_image(vqgan, load_image(tmp_path / "init.png"))).detach()
    free = generate(config.replace(init_weight=0.0)).image
    held = generate(config.replace(init_weight=1000.0)).image
    drift_free = (free - start).abs().mean().item()
    drift_held = (held - start).abs().mean().item()
    assert drift_held < 0.5 * drift_free, (drift_held, drift_free)


def test_negative_weight_lowers_its_own_similarity(tiny_config: GenerationConfig) -> None:
    config = tiny_config.replace(prompts="a red circle:-1", max_iterations=30)
    result = generate(config)
    before = _sim(config, _start_image(config), "a red circle")
    after = _sim(config, result.image, "a red circle")
    assert after < before - 0.02, (before, after)


def test_stop_ends_the_pull(tiny_config: GenerationConfig) -> None:
    # A stop above any reachable distance cuts the gradient: the latent never moves.
    config = tiny_config.replace(prompts="a red circle:1:10", max_iterations=5)
    assert torch.equal(generate(config).image, _start_image(config))


@pytest.mark.parametrize("optimizer", [name for name in OPTIMIZERS if name != "Adam"])
def test_every_optimizer_moves_the_latent(tiny_config: GenerationConfig, optimizer: str) -> None:
    loop, state = prepare(tiny_config.replace(optimizer=optimizer), resolve_device("cpu"))
    assert type(state.optimizer) is OPTIMIZER_CLASSES[optimizer]
    start = state.latent.detach().clone()
    for _ in range(2):
        out = step(loop, state)
    assert torch.isfinite(out["loss"]) and not torch.equal(state.latent, start)
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)


def test_latent_pyramid_moves_regions_and_stays_in_the_codebook_range() -> None:
    from vqclip.loop.generators import compose_latent
    from vqclip.loop.optimise import start_state

    g = torch.Generator().manual_seed(0)
    start = torch.randn(1, 4, 16, 16, generator=g)
    state = start_state(start, "Adam", 0.1, g, levels=3)
    assert [tuple(level.shape[-2:]) for level in state.levels] == [(4, 4), (8, 8), (16, 16)]
    assert torch.equal(state.latent, start)  # coarse levels start at zero
    # A gradient on one corner moves the coarse cells: the whole corner region shifts together.
    target = torch.zeros(1, 4, 16, 16)
    target[..., :8, :8] = 3.0
    for _ in range(20):
        state.optimizer.zero_grad()
        (state.latent - target).square().sum().backward()
        state.optimizer.step()
    coarse_moves = [level.detach().abs().max().item() for level in state.levels[:-1]]
    assert min(coarse_moves) > 0.5, coarse_moves
    # The clamp keeps the composed latent inside the codebook's per-channel range.
    from vqclip.loop.generators import clamp_levels

    codebook = torch.rand(8, 4) - 0.5  # range within [-0.5, 0.5]
    clamp_levels(state.levels, codebook.min(0).values, codebook.max(0).values)
    latent = compose_latent(state.levels)
    low, high = codebook.min(0).values.view(1, -1, 1, 1), codebook.max(0).values.view(1, -1, 1, 1)
    assert bool(((latent >= low - 1e-6) & (latent <= high + 1e-6)).all())


def test_latent_levels_generate_reproducibly(tiny_config: GenerationConfig) -> None:
    config = tiny_config.replace(latent_levels=3, max_iterations=6)
    first, second = generate(config), generate(config)
    assert torch.equal(first.image, second.image)
    assert not torch.equal(first.image, generate(config.replace(latent_levels=1)).image)


def test_best_of_keeps_the_candidate_clip_scores_best(tiny_config: GenerationConfig) -> None:
    from vqclip.loop.optimise import image_losses
    from vqclip.run.build import prepare

    config = tiny_config.replace(best_of=3, max_iterations=4, display_frequency=2)
    result = generate(config)
    assert result.image.shape == (1, 3, 32, 32)
    assert [p.name for p in result.frames] == ["000000.png", "000002.png", "000004.png"]
    # The three candidates are exactly the images of a batch of three from the same seed.
    candidates = generate(config.replace(best_of=1, batch_size=3)).image
    loop, _ = prepare(config, resolve_device("cpu"))
    losses = image_losses(loop, candidates)
    assert len(set(losses.tolist())) == 3  # distinct candidates, a real choice
    assert torch.equal(result.image[0], candidates[int(losses.argmin())])


def _total_variation(image: torch.Tensor) -> float:
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    return float(dx + dy)


def test_smoothness_flattens_the_image(tiny_config: GenerationConfig) -> None:
    config = tiny_config.replace(max_iterations=20, step_size=0.2)
    rough = generate(config).image
    smooth = generate(config.replace(smoothness=500.0)).image
    # The tiny random decoder can only get so flat: measured 0.285 -> 0.245.
    assert _total_variation(smooth) < 0.9 * _total_variation(rough)
    from vqclip.loop.losses import smoothness_loss

    flat, checker = torch.full((2, 3, 8, 8), 0.3), (torch.arange(64).view(8, 8) % 2).float()
    assert smoothness_loss(flat, 1.0) == 0
    assert torch.isclose(smoothness_loss(checker.expand(1, 3, 8, 8), 1.0), torch.tensor(1.0))


def test_palette_start_takes_clip_ranked_flat_colours(tiny_config: GenerationConfig) -> None:
    from vqclip.loop.optimise import image_losses
    from vqclip.run.build import PALETTE, prepare

    config = tiny_config.replace(start="palette", best_of=3, batch_size=2)
    loop, state = prepare(config, resolve_device("cpu"))
    assert state.latent.shape[0] == 6
    # Each image's candidates start from the three colours CLIP ranks best, in that order.
    flats = torch.tensor(list(PALETTE.values())).float().div(255).view(-1, 3, 1, 1)
    flats = flats.expand(-1, 3, 32, 32)
    ranked = image_losses(loop, flats).argsort()[:3]
    assert len(set(image_losses(loop, flats).tolist())) == len(PALETTE)  # a real ranking
    expected = loop.generator.encode(flats[ranked].contiguous()).repeat(2, 1, 1, 1)
    assert torch.equal(state.latent, expected)
    assert torch.equal(generate(config).image, generate(config).image)


def test_a_terms_weight_ramps_up_then_holds() -> None:
    from vqclip.loop.objective import PriorTerm

    ramped = PriorTerm("prior", 6.0, 3)
    assert [ramped.weight_at(i) for i in range(5)] == [2.0, 4.0, 6.0, 6.0, 6.0]
    held = PriorTerm("prior", 6.0)
    assert [held.weight_at(i) for i in range(3)] == [6.0, 6.0, 6.0]


@pytest.mark.parametrize("kind", ["pixels", "gradient"])
def test_noise_starts_encode_a_seeded_random_image(
    tiny_config: GenerationConfig, kind: str
) -> None:
    from vqclip.loop.latents import noise_image

    config = tiny_config.replace(start=kind, batch_size=2)
    loop, state = prepare(config, resolve_device("cpu"))
    images = noise_image(kind, 2, 32, 32, torch.Generator().manual_seed(config.seed))
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert not torch.equal(images[0], images[1])  # each image its own draw
    assert torch.equal(state.latent, loop.generator.encode(images))
    if kind == "gradient":  # a gradient changes smoothly: neighbours differ little
        assert images.diff(dim=-1).abs().max() < 0.1 and images.diff(dim=-2).abs().max() < 0.1
    other = noise_image(kind, 2, 32, 32, torch.Generator().manual_seed(config.seed + 1))
    assert not torch.equal(images, other)


@pytest.mark.slow  # about a minute of compiling on 2 CPU cores
def test_compiled_models_score_as_the_eager_ones(tiny_config: GenerationConfig) -> None:
    def run(config: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
        losses: list[torch.Tensor] = []
        result = generate(config, callback=lambda info: losses.append(info["loss"]))
        return torch.stack(losses), result.image

    config = tiny_config.replace(max_iterations=3, display_frequency=1)
    eager_losses, eager_image = run(config)
    losses, image = run(config.replace(compile=True))
    assert torch.allclose(losses, eager_losses, atol=1e-4)
    assert torch.allclose(image, eager_image, atol=1e-3)
    compiled, _ = load_models(config.replace(compile=True), resolve_device("cpu"))
    eager, _ = load_models(config, resolve_device("cpu"))
    assert hasattr(compiled.decoder, "_orig_mod") and not hasattr(eager.decoder, "_orig_mod")


def test_a_batch_of_prompts_steers_each_image_by_its_own(tiny_config: GenerationConfig) -> None:
    from vqclip.run.frames import frame_paths, read_png_metadata

    base = tiny_config.replace(start="plain", max_iterations=3)
    red_blue = generate(base.replace(prompts="", batch_prompts=("a red circle", "a blue square")))
    red_green = generate(base.replace(prompts="", batch_prompts=("a red circle", "a green one:2")))
    assert red_blue.config.batch_size == 2 and red_blue.image.shape[0] == 2
    # Both start from the same grey: the first image, steered by the same prompt, comes out the
    # same whatever the second is steered by; the second differs.
    assert torch.equal(red_blue.image[0], red_green.image[0])
    assert not torch.equal(red_blue.image[1], red_green.image[1])
    alone = generate(base.replace(prompts="a red circle", batch_size=2)).image
    assert not torch.equal(alone[1], red_blue.image[1])  # not the shared prompt either
    first, second = [p for p in frame_paths(red_blue.run_dir) if p.stem.startswith("000000")]
    assert read_png_metadata(first)["prompts"] == "a red circle"
    assert read_png_metadata(second)["prompts"] == "a blue square"


def test_a_batch_of_prompts_ranks_candidates_and_palettes_per_image(
    tiny_config: GenerationConfig,
) -> None:
    from vqclip.loop.optimise import best_candidates, image_losses
    from vqclip.run.build import PALETTE, prepare

    prompts = ("a red circle", "a blue square")
    config = tiny_config.replace(prompts="", batch_prompts=prompts, best_of=2, start="palette")
    loop, state = prepare(config, resolve_device("cpu"))
    assert len(loop.objective.prompts.row_targets) == 4  # (image 0, image 0, image 1, image 1)
    flats = torch.tensor(list(PALETTE.values())).float().div(255).view(-1, 3, 1, 1)
    flats = flats.expand(-1, 3, 32, 32).contiguous()
    picks = []
    for prompt in prompts:  # each image's candidates start from its own prompt's best colours
        single, _ = prepare(tiny_config.replace(prompts=prompt), resolve_device("cpu"))
        picks += image_losses(single, flats).argsort()[:2].tolist()
    assert torch.equal(state.latent, loop.generator.encode(flats[picks]))
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    chosen = best_candidates(loop, images, 2)
    for b, prompt in enumerate(prompts):
        single, _ = prepare(tiny_config.replace(prompts=prompt), resolve_device("cpu"))
        pair = images[2 * b : 2 * b + 2]
        assert torch.equal(chosen[b], pair[image_losses(single, pair).argmin()])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prompts": "a cat"}, "prompts: 'a cat' and batch_prompts both given"),
        ({"batch_prompts": ("a", 3)}, "batch_prompts: item 1 is 3; expected a string"),
        ({"batch_prompts": ("a", "")}, "batch_prompts: item 1 is empty"),
        ({"batch_size": 3}, "batch_size: 3 does not match the 2 batch_prompts"),
        ({"batch_prompts": ("a", "b:x1")}, None),  # "b:x1" is text: its suffix is not a number
    ],
)
def test_batch_prompts_errors(changes: dict, message: str | None) -> None:
    values = {"prompts": "", "batch_prompts": ("a cat", "a dog"), **changes}
    if message is None:
        assert GenerationConfig(**values).batch_size == 2
        return
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**values)


def test_auto_precision_picks_this_devices_fastest_and_records_it(
    tiny_config: GenerationConfig,
) -> None:
    from vqclip.models.tuning import measure_precision

    result = generate(tiny_config.replace(precision="auto", max_iterations=2))
    picked = measure_precision(torch.device("cpu"))  # measured once, then cached
    assert result.config.precision == picked.precision
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["precision"] == picked.precision and saved["precision_choice"].startswith(
        "measured"
    )
    rerun = generate(GenerationConfig.from_dict(saved))  # the recorded choice is repeated
    assert torch.equal(rerun.image, result.image)


@pytest.mark.parametrize(("batches", "pull"), [(2, 0.3), (3, 0.3), (2, 0.0)])
def test_cutout_batches_give_the_same_gradient(
    tiny_config: GenerationConfig, tiny_models: dict, batches: int, pull: float
) -> None:
    """The same cutouts scored in batches, gradients accumulated: the same step to rounding,
    with two perceptors, a batch of two candidates, and the pulls or none."""
    ensemble = (tiny_config.clip_model, f"{tiny_models['clip48']}:0.5")
    config = tiny_config.replace(clip_model=ensemble, best_of=2, init_weight=pull, smoothness=pull)
    config = config.replace(precision="fp32")  # bf16 would round each batch size its own way
    results = []
    for n in (1, batches):
        loop, state = prepare(config.replace(cutn_batches=n), resolve_device("cpu"))
        out = step(loop, state)
        results.append(([p.grad.clone() for p in state.levels], out))
    (grads, one), (split, many) = results
    for whole, parts in zip(grads, split, strict=True):
        assert torch.allclose(whole, parts, rtol=1e-4, atol=1e-6), (whole - parts).abs().max()
    assert torch.allclose(one["loss"], many["loss"], rtol=1e-5)
    assert torch.allclose(one["losses"], many["losses"], rtol=1e-5)
    assert one["terms"].keys() == many["terms"].keys()
    for name, value in one["terms"].items():
        assert torch.allclose(value, many["terms"][name], rtol=1e-5, atol=1e-7), name


def test_cutout_batches_must_leave_none_empty() -> None:
    with pytest.raises(ValueError, match="cutn_batches: 9 batches of 8 cutouts"):
        GenerationConfig(prompts="a", cutn=8, cutn_batches=9)
