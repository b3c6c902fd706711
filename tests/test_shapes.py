"""The shapes world: data set, judge, shipped models, and generations that follow the prompt."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqclip.core.images import to_uint8
from vqclip.loop.optimise import NOISE
from vqclip.models import registry
from vqclip.models.prior import load_prior, redraw
from vqclip.models.tuning import fast_precision
from vqclip.models.unet import UNetSpec, load_unet
from vqclip.models.vqgan_clip import load_clip, load_vqgan
from vqclip.shapes import evaluate
from vqclip.shapes.data import COLORS, SHAPES, Scene, caption, render, sample_scenes
from vqclip.shapes.judge import judge
from vqclip.shapes.plugin import WEIGHTS
from vqclip.shapes.prior import reading_accuracy
from vqclip.shapes.train import (
    corrupt,
    train_clip,
    train_diffusion,
    train_prior,
    train_upscaler,
    train_vqgan,
    upscaler_psnr,
)


def test_data_set_is_seeded_and_varied() -> None:
    first = sample_scenes(300, torch.Generator().manual_seed(3))
    again = sample_scenes(300, torch.Generator().manual_seed(3))
    assert first == again and torch.equal(render(first[:4]), render(again[:4]))
    assert {s.color for s in first} == set(COLORS) and {s.shape for s in first} == set(SHAPES)
    assert all(s.color != s.background for s in first)
    assert len({round(s.radius) for s in first}) > 8 and len({round(s.cx) for s in first}) > 20
    captions = {caption(s, torch.Generator().manual_seed(i)) for i, s in enumerate(first[:60])}
    assert len(captions) > 40


@pytest.mark.parametrize("size", [32, 64])
def test_judge_on_fresh_data_set_images(size: int) -> None:
    """Rendering is deterministic and the judge fits shapes exactly enough: every image."""
    accuracy = evaluate.judge_accuracy(count=400, seed=2026, size=size)
    assert accuracy == {"joint": 1.0, "colors": 1.0, "shapes": 1.0}, accuracy


@pytest.mark.parametrize("size", [32, 64, 128])  # the diffusion model's, the data set's, 2x
def test_judge_accepts_every_clean_rendering(size: int) -> None:
    """Every colour x shape x background, small and large, centred and near the corners, at
    each size the shapes world draws (the smallest triangle at 32x32 is 25 pixels)."""
    places = [(10, 12, 12), (17, 40, 25), (24, 24, 24), (13, 52, 11), (10.2, 50, 40)]
    for color, shape, background in itertools.product(COLORS, SHAPES, COLORS):
        if color == background:
            continue
        scenes = [Scene(color, background, shape, float(x), float(y), float(r)) for r, x, y in places]  # fmt: skip
        for scene, image in zip(scenes, render(scenes, size), strict=True):
            verdict = judge(to_uint8(image))
            assert verdict.matches(color, shape, background), (scene, verdict)


def _drawn(mask: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """A red ``mask`` on blue, 64x64 (or on ``fill``, a whole image under it)."""
    image = np.empty((64, 64, 3), np.uint8)
    image[:] = COLORS["blue"] if fill is None else fill
    image[mask] = COLORS["red"]
    return image


_Y, _X = np.mgrid[:64, :64] + 0.5
_R, _A = np.hypot(_X - 32, _Y - 32), np.arctan2(_Y - 32, _X - 32)


def _grey_with_a_blue_edge() -> np.ndarray:
    image = np.full((64, 64, 3), 128, np.uint8)  # 94% grey: no colour of the palette
    image[[0, -1], :], image[:, [0, -1]] = COLORS["blue"], COLORS["blue"]
    image[_R <= 6] = COLORS["red"]
    return image


@pytest.mark.parametrize(
    "name, image",
    [
        ("ellipse 1.6:1", _drawn(((_X - 32) / 20) ** 2 + ((_Y - 32) / 12.5) ** 2 <= 1)),
        ("small ellipse 1.6:1", _drawn(((_X - 32) / 8) ** 2 + ((_Y - 32) / 5) ** 2 <= 1)),
        ("small rectangle 1.6:1", _drawn((abs(_X - 32) <= 6.5) & (abs(_Y - 32) <= 4))),
        ("rectangle 1.6:1", _drawn((abs(_X - 32) <= 16) & (abs(_Y - 32) <= 10))),
        ("trapezoid", _drawn((_Y >= 18) & (_Y <= 46) & (abs(_X - 32) <= 9 + (_Y - 18) / 28 * 9))),
        (
            "mild trapezoid",
            _drawn((_Y >= 18) & (_Y <= 46) & (abs(_X - 32) <= 11 + (_Y - 18) / 28 * 5)),
        ),  # fmt: skip
        ("lumpy blob, 5 lobes", _drawn(_R <= 16 * (1 + 0.2 * np.sin(5 * _A)))),
        ("lumpy blob, 3 lobes", _drawn(_R <= 16 * (1 + 0.2 * np.sin(3 * _A)))),
        (
            "three small discs",
            _drawn(
                (np.hypot(_X - 14, _Y - 14) <= 7)
                | (np.hypot(_X - 45, _Y - 20) <= 7)
                | (np.hypot(_X - 30, _Y - 48) <= 7)
            ),
        ),  # fmt: skip
        (
            "square, 15% punched out",
            _drawn(
                (abs(_X - 32) <= 14)
                & (abs(_Y - 32) <= 14)
                & (np.random.default_rng(0).random((64, 64)) >= 0.15)
            ),
        ),  # fmt: skip
        ("grey, a thin blue edge, a small red disc", _grey_with_a_blue_edge()),
        (
            "speckle",
            np.where(
                np.random.default_rng(1).random((64, 64, 1)) < 0.5, COLORS["red"], COLORS["blue"]
            ).astype(np.uint8),
        ),  # fmt: skip
    ],
)
def test_judge_rejects_what_is_not_a_red_shape_on_blue(name: str, image: np.ndarray) -> None:
    """Issue 46: the box-fill judge read an ellipse, a trapezoid, a blob as circles or squares
    and a grey image with a blue edge as blue; none is any prompted shape in its colours now."""
    verdict = judge(image)
    assert not any(verdict.matches("red", shape, "blue") for shape in SHAPES), (name, verdict)


def test_shipped_models_load_through_the_registry_and_are_small() -> None:
    yaml_path, ckpt_path = registry.resolve_vqgan("shapes-vqgan")
    clip_path = registry.resolve_clip("shapes-clip")
    vit_path = registry.resolve_clip("shapes-clip-vit")
    prior_path = registry.resolve_prior("shapes-prior")
    diffusion_path, flags = registry.resolve_diffusion("shapes-diffusion")
    upscaler_path = registry.resolve_upscaler("shapes-upscaler")
    assert yaml_path.parent == clip_path.parent == vit_path.parent == prior_path.parent == WEIGHTS
    assert diffusion_path.parent == upscaler_path.parent == WEIGHTS
    files = (yaml_path, ckpt_path, clip_path, vit_path, prior_path, diffusion_path, diffusion_path.with_suffix(".json"), upscaler_path)  # fmt: skip
    total = sum(p.stat().st_size for p in files)
    assert total <= 40e6, f"{total / 1e6:.1f} MB"  # issue 33's limit for the shipped weights
    unet = load_unet(diffusion_path, UNetSpec.from_dict(flags))
    assert unet.spec.image_size == 32 and not unet.spec.learn_sigma
    vqgan = load_vqgan(yaml_path, ckpt_path)
    clip_model, vit = load_clip(clip_path), load_clip(vit_path)
    assert vqgan.spec.factor == 4 and clip_model.visual.input_resolution == 64
    assert vit.visual.input_resolution == 64 and vit.visual.conv1.kernel_size == (8, 8)


# Chance is 1/3 for shapes. Measured 0.97 for the ResNet: fine-tuned with strong noise before
# the adversarial fine-tuning, CLIP keeps its shape accuracy (0.72 when attacked without the
# noise; docs/shapes.md). The ViT, with 8-pixel patches and a narrower text tower, measured 0.57:
# it brings colours to an ensemble, the ResNet the shapes.
@pytest.mark.parametrize(("name", "shapes"), [("shapes-clip", 0.9), ("shapes-clip-vit", 0.5)])
def test_shipped_clip_zero_shot_is_far_above_chance(name: str, shapes: float) -> None:
    clip_model = load_clip(registry.resolve_clip(name))
    accuracy = evaluate.zero_shot_accuracy(clip_model)
    print(f"{name} zero-shot accuracy:", accuracy)
    assert accuracy["color"] >= 0.9 and accuracy["background"] >= 0.9, accuracy
    assert accuracy["shape"] >= shapes, accuracy


def test_shipped_clip_prefers_the_prompted_shape_over_the_other_two() -> None:
    clip_model = load_clip(registry.resolve_clip("shapes-clip"))
    preference = evaluate.shape_preference(clip_model)
    print("shape preference:", preference)
    # Chance: 1/3. Measured 0.98 with a median margin of 0.13 in cosine similarity (0.57 and
    # 0.003 for the CLIP attacked without the noise fine-tuning first; docs/shapes.md).
    assert preference["prefers_prompted"] >= 0.9 and preference["median_margin"] > 0.05, preference


def test_the_shipped_upscaler_beats_lanczos_and_nearest_on_held_out_scenes() -> None:
    """Issue 34's condition for shipping a trained upscaler: higher PSNR than Lanczos and than
    nearest neighbour (which the model adds its correction to) at 4x, restoring 64 held-out
    renderings from their 4x4 averages (docs/shapes.md: 35.2, 31.8 and 29.1 dB)."""
    psnr = upscaler_psnr("shapes-upscaler")
    print("shapes-upscaler x4, PSNR in dB:", psnr)
    assert psnr["psnr"] > max(psnr["lanczos_psnr"], psnr["nearest_psnr"]) + 1.0, psnr


def test_training_scripts_run_and_save_loadable_checkpoints(tmp_path: Path) -> None:
    train_vqgan(steps=2, out=tmp_path, batch=2)
    train_clip(steps=2, out=tmp_path, batch=8, adversarial=0.03)
    train_clip(steps=2, out=tmp_path, batch=8, kind="clip-vit")
    train_prior(steps=2, out=tmp_path, batch=4)
    train_diffusion(steps=2, out=tmp_path, batch=2)
    again = train_diffusion(steps=2, out=tmp_path / "again", batch=2)
    assert again["final_loss"] > 0
    first, second = (torch.load(p / "shapes_diffusion.pt") for p in (tmp_path, tmp_path / "again"))  # fmt: skip
    assert all(torch.equal(first[k], second[k]) for k in first)  # seeded: the same weights
    train_upscaler(steps=2, out=tmp_path, batch=2)
    train_upscaler(steps=2, out=tmp_path / "again", batch=2)
    first, second = (torch.load(p / "shapes_upscaler.pth") for p in (tmp_path, tmp_path / "again"))  # fmt: skip
    assert all(torch.equal(first[k], second[k]) for k in first)
    vqgan = load_vqgan(tmp_path / "shapes_vqgan.yaml", tmp_path / "shapes_vqgan.ckpt")
    clip_model = load_clip(tmp_path / "shapes_clip.pt")
    prior = load_prior(tmp_path / "shapes_prior.pt")
    assert vqgan.codebook.shape[0] == 256 and clip_model.context_length == 24
    assert load_clip(tmp_path / "shapes_clip_vit.pt").visual.conv1.kernel_size == (8, 8)
    assert prior.resolution == 64


def test_shipped_prior_reads_blobs_as_the_scenes_they_came_from() -> None:
    prior = load_prior(registry.resolve_prior("shapes-prior"))
    scenes = sample_scenes(300, torch.Generator().manual_seed(2027))
    clean = render(scenes)
    blobs = corrupt(clean, torch.Generator().manual_seed(8))  # warped, noisy, speckled
    accuracy = {}
    for name, images in (("clean", clean), ("blobs", blobs)):
        for field, share in reading_accuracy(prior, images, scenes).items():
            accuracy[f"{name} {field}"] = share
    print("the prior's reading:", accuracy)
    # Chance is 1/6 for colours and 1/3 for shapes. Measured: every colour right; shapes 0.99 on
    # clean images and 0.85 on blobs (some warps turn a shape into another).
    assert min(v for k, v in accuracy.items() if "shape" not in k) >= 0.98, accuracy
    assert accuracy["clean shape"] >= 0.95 and accuracy["blobs shape"] >= 0.75, accuracy
    redrawn = prior(blobs)  # a clean rendering of what it read: two colours and sharp edges
    assert torch.equal(redrawn, render(prior.scenes(blobs)))


def test_scenes_render_at_any_size_and_the_prior_redraws_them_there() -> None:
    prior = load_prior(registry.resolve_prior("shapes-prior"))
    scenes = sample_scenes(60, torch.Generator().manual_seed(2028))
    small = render(scenes)
    # The scene's 64-pixel canvas drawn at twice the size, averaged back down: the same image
    # up to the anti-aliasing of the edges.
    big = render(scenes, 128)
    assert (F.avg_pool2d(big, 2) - small).abs().max() < 0.25
    assert (F.avg_pool2d(big, 2) - small).abs().mean() < 0.002
    # A wide image of a scene: the middle band of a 160-pixel rendering, its shape inside it.
    banded = [replace(s, cy=32.0, radius=min(s.radius, 12.0)) for s in scenes]
    wide = render(banded, 160)[..., 48:112, :]
    # The prior reads an image of another size at its own 64x64 (a wide one letterboxed) and
    # redraws it at the image's, close to the truth, in the judge's eyes too.
    for images, truth in ((big, scenes), (wide, banded)):
        redrawn = redraw(images, prior)
        assert redrawn.shape == images.shape
        # Off at the outline only: the read place and size are a pixel or so out (measured
        # 0.014 on the squares, 0.033 on the wide band, where the shape fills more of it).
        assert (redrawn - images).abs().mean() < 0.045
        seen = [judge(to_uint8(image)) for image in redrawn]
        right = [
            (j.color, j.background, j.shape) == (s.color, s.background, s.shape)
            for j, s in zip(seen, truth, strict=True)
        ]
        assert sum(right) / len(scenes) >= 0.95, sum(right)


def test_the_shapes_world_draws_at_other_sizes(tmp_path: Path) -> None:
    from PIL import Image

    from vqclip.frontends import cli

    # The shapes models were trained at 64x64; the prior reads the image letterboxed at that
    # size and redraws it at the image's (24 prompts: at 128x128 right colours 100%, shapes
    # 83%; at 128x96 96% and 79%).
    prompt, size = "a red circle on a blue background", ["--width", "128", "--height", "96"]
    cli.main(["generate", prompt, *size, "--seed", "0", "--device", "cpu", "--output_dir", str(tmp_path)])  # fmt: skip
    (run,) = tmp_path.iterdir()
    with Image.open(run / "final.png") as image:
        seen = judge(np.asarray(image.convert("RGB")))
        assert image.size == (128, 96)
    print("the shapes world at 128x96:", seen)
    assert seen.top_two() == {"red", "blue"}, seen  # the prompt's two colours cover the most


def test_evaluate_takes_a_side_or_width_and_height() -> None:
    import argparse

    assert evaluate.image_size("128") == (128, 128)
    assert evaluate.image_size("128x96") == (128, 96)
    for bad in ("128x", "0x64", "a", "64x64x64"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected W or WxH"):
            evaluate.image_size(bad)


def test_clip_training_is_reproducible_and_noise_changes_it(tmp_path: Path) -> None:
    weights = {}
    for name, noise in (("a", NOISE), ("b", NOISE), ("quiet", 0.0)):
        train_clip(steps=2, out=tmp_path / name, batch=8, noise=noise)
        weights[name] = load_clip(tmp_path / name / "shapes_clip.pt").state_dict()
    same = [torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"]]
    unchanged = [torch.equal(weights["a"][k], weights["quiet"][k]) for k in weights["a"]]
    assert all(same) and not all(unchanged)


def test_adversarial_images_stay_close_and_fool_clip() -> None:
    from vqclip.loop.embeddings import embed_texts, similarity
    from vqclip.loop.perceptors import Perceptor
    from vqclip.shapes.data import canonical_caption, render, sample_scenes
    from vqclip.shapes.train import adversarial_images

    clip_model = load_clip(registry.resolve_clip("shapes-clip"))
    scenes = sample_scenes(8, torch.Generator().manual_seed(3))
    images = render(scenes)
    captions = [canonical_caption(s.color, s.shape, s.background) for s in scenes]
    texts = embed_texts(Perceptor(clip_model), captions)  # (8, E), unit length
    eps = 0.1
    attacked = adversarial_images(clip_model, images, texts, eps, torch.Generator().manual_seed(0))
    assert (attacked - images).abs().max() <= eps + 1e-6
    assert 0 <= attacked.min() and attacked.max() <= 1
    signs = torch.randint(2, images.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noisy = (images + eps * signs).clamp(0, 1)  # random changes just as large

    def own_caption_similarity(x: torch.Tensor) -> float:
        return float(similarity(Perceptor(clip_model), x, captions).diagonal().mean())

    clean, random, worst = map(own_caption_similarity, (images, noisy, attacked))
    print(
        f"similarity to own caption: clean {clean:.3f}, random {random:.3f}, attacked {worst:.3f}"
    )
    assert worst < random - 0.02 and worst < clean - 0.02


def test_candidates_are_ranked_by_clip_and_the_priors_pull() -> None:
    from dataclasses import replace

    from vqclip.loop.optimise import best_candidates, image_losses, prompt_scores
    from vqclip.models.prior import prior_pull
    from vqclip.run.build import prepare, resolve_device
    from vqclip.shapes.data import Scene

    config = evaluate.shapes_config("a red circle on a blue background", 0, ".")
    loop, _ = prepare(config, resolve_device("cpu"))
    right, wrong = Scene("red", "blue", "circle", 32, 32, 16), Scene("red", "blue", "square", 32, 32, 16)  # fmt: skip
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    candidates = torch.cat([(render([right]) + 0.3 * noise).clamp(0, 1), render([wrong])])
    clip_only = image_losses(loop, candidates)
    assert clip_only[0] < clip_only[1]  # CLIP alone prefers the noisy rendering of the prompt
    # The pull is toward the redrawing that CLIP likes best among the prior's alternatives.
    (term,) = loop.objective.pulls
    pull = prior_pull(candidates, term.prior, term.weight, prompt_scores(loop))
    assert pull[1] < pull[0]  # the clean scene is near a clean redrawing, the noisy one is not
    objective = loop.objective
    heavy = replace(loop, objective=replace(objective, pulls=(replace(term, weight=1000.0),)))
    no_prior = replace(loop, objective=replace(objective, pulls=()))
    assert torch.equal(best_candidates(no_prior, candidates, 2)[0], candidates[0])
    assert torch.equal(best_candidates(heavy, candidates, 2)[0], candidates[1])
    total = clip_only + pull
    assert torch.equal(best_candidates(loop, candidates, 2)[0], candidates[int(total.argmin())])


@pytest.mark.slow  # 8 generations: under a minute on a 2-core CPU
def test_the_demo_draws_what_it_prompts_with_any_seed(tmp_path: Path) -> None:
    """Issue 31: ``make demo``'s prompt, in the precision ``auto`` picks on this CPU (as the demo
    runs), gives a red circle on blue by the judge for each of seeds 0-7, not only for the
    demo's own seed 0 (measured: 8 of 8 in fp32 and in bf16 on the Intel Xeon)."""
    case = evaluate.PromptCase("a red circle on a blue background", "red", "circle", "blue")
    rows = evaluate.run_cases([case], list(range(8)), tmp_path, jobs=2, precision="auto")
    verdicts = [(r["judged_color"], r["judged_shape"], r["judged_background"]) for r in rows]
    print("demo's prompt, seeds 0-7:", verdicts)
    assert verdicts == [("red", "circle", "blue")] * 8


@pytest.fixture(scope="module")
def generations(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """12 colour pairs, seed 0, in fp32, generated once for the steering and success checks
    (24 runs: with 48, the whole suite ran past 30 minutes on a 2-core AVX2-only CPU)."""
    out = tmp_path_factory.mktemp("shapes-runs")
    return evaluate.run_cases(evaluate.prompt_cases(24), [0], out, jobs=2, precision="fp32")


@pytest.mark.slow  # the 24 generations: about 2 minutes on a 2-core CPU
def test_steering_follows_the_prompted_colour(generations: list[dict]) -> None:
    firsts, seconds = evaluate.split_pairs(generations, seeds=1)
    assert [a["prompt"].replace(a["color"], "?") for a in firsts] == [
        b["prompt"].replace(b["color"], "?") for b in seconds
    ]
    rate = evaluate.steering_rate(firsts, seconds)
    print(f"steering: {rate:.0%} of {2 * len(firsts)} comparisons")
    # Chance is 0.5. Measured 1.0 over seeds 0-3 (palette start, 3 latent levels, the scene
    # prior's pull in the latent, best of 3; 0.96 with the pull in pixels); issue 3: 0.9.
    assert rate >= 0.85


@pytest.mark.slow
def test_prompt_success_as_the_judge_sees_it(generations: list[dict]) -> None:
    rates = evaluate.success_rates(generations)
    print("prompt success:", rates)
    assert rates["runs"] == 24
    # Chance that the two prompted colours are the two largest of six is 1/15, and of the right
    # shape 1/3 at best. Measured with the palette start, 3 latent levels, the best of 3
    # candidates and the scene prior's pull in the VQGAN's latent, ramping up to 24 over 15 of
    # 30 steps, toward the redrawing CLIP picks among the scenes one change away from the
    # prior's reading: colours 1.0, in their roles 1.0, shapes 0.95 over 96 runs of seeds 0-3
    # (the pull in pixels, to 12 over 60 steps: 0.96, 0.96, 0.75 to 0.85; no prior: 0.94, 0.81,
    # 0.15). Issue 30 aims at 0.9 shapes on every CPU; the bounds sit a few of the 24 runs below
    # the measured rates: another CPU sums floats in another order.
    # Joint (colour, shape and background right in the same image) with the fitting judge and
    # the step's fall over the last 10 steps: 0.96 (23 of 24) here (2026-12-07, AMD EPYC; 22 to
    # 23 of 24 on seeds 1-3, 91 of 96 in all); asserted 4 runs lower: the seeds' spread and
    # another CPU's rounding (which moved 3 of 96 runs before).
    assert rates["joint"] >= 0.8, rates
    assert rates["colors"] >= 0.85 and rates["roles"] >= 0.85 and rates["shapes"] >= 0.8, rates


@pytest.mark.slow
def test_fast_path_keeps_prompt_success(tmp_path: Path, generations: list[dict]) -> None:
    """The quality guard: bf16 autocast, which precision auto picks where it is faster,
    reaches fp32's prompt-success rates within noise, on the 24 prompts with seed 0 (the fp32
    rows of the same runs). It runs wherever auto picks bf16, whatever the CPU's flags say."""
    picked = fast_precision(torch.device("cpu"))
    if picked != "bf16":  # emulated bf16: 120 s per image here, and auto never takes it
        pytest.skip(f"precision auto picks {picked} on this CPU, so no user runs bf16 here")
    fast = evaluate.success_rates(
        evaluate.run_cases(evaluate.prompt_cases(24), [0], tmp_path, 2, precision="bf16")
    )
    exact = evaluate.success_rates([row for row in generations if row["seed"] == 0])
    print("fp32:", exact, "bf16:", fast)
    assert fast["runs"] == exact["runs"] == 24
    assert fast["colors"] >= exact["colors"] - 0.15 and fast["shapes"] >= exact["shapes"] - 0.2
    assert fast["joint"] >= exact["joint"] - 0.2  # measured 1.0 against 0.96 (AMD EPYC)


@pytest.mark.slow  # 24 generations with two CLIPs, one candidate each: about 1.5 minutes
def test_an_ensemble_of_the_two_shapes_clips_steers_the_colour(
    tmp_path: Path, generations: list[dict]
) -> None:
    """Issue 32's check: the ResNet and the ViT shapes CLIPs together, each of 12 colour pairs,
    seed 0, reported beside the single model's runs of the same prompts. One candidate per
    image rather than the preset's three, which with the ViT cost 2.2x the single model's time
    (the prior scores its redrawings through both), to keep the suite within its 30 minutes on
    the slower CPU; the preset's figures are in docs/shapes.md."""
    rows = evaluate.run_cases(
        evaluate.prompt_cases(24), [0], tmp_path, 2, precision="fp32", best_of=1,
        clip_model="shapes-clip + shapes-clip-vit:0.5",
    )  # fmt: skip
    rate = evaluate.steering_rate(*evaluate.split_pairs(rows, seeds=1))
    both, single = evaluate.success_rates(rows), evaluate.success_rates(generations)
    print(f"ensemble, best of 1: steering {rate:.0%} of 24 comparisons; {both}")
    print(f"single model, best of 3: {single}")
    # Measured 100% steering, colours 0.92, shapes 0.88 (with the pull in pixels over 60 steps:
    # 100%, 0.96, 0.71).
    # Joint with the fitting judge: 0.83 (20 of 24; AMD EPYC, 2026-12-07, with the step's fall;
    # 0.79 before it), asserted 4 runs below the 0.79.
    assert rate >= 0.9 and both["colors"] >= 0.8 and both["joint"] >= 0.62, (rate, both)


@pytest.mark.slow  # 24 generations: about 1.5 minutes on a 2-core CPU
def test_the_pixels_generator_steers_the_colour(tmp_path: Path) -> None:
    """The pixels generator in the shapes world (its preset): each of 12 colour pairs, seed 0."""
    rows = evaluate.run_cases(
        evaluate.prompt_cases(24), [0], tmp_path, 2, generator="pixels", precision="fp32"
    )
    rate = evaluate.steering_rate(*evaluate.split_pairs(rows, seeds=1))
    rates = evaluate.success_rates(rows)
    print(f"pixels: steering {rate:.0%} of 24 comparisons; {rates}")
    print("pixels, judged colours:", [(r["prompt"], r["top_two"]) for r in rows])
    # Measured 100% steering, colours, roles and shapes (seeds 1-3: 100%, 100%, 100%, 99%).
    # Joint with the fitting judge: 1.0 (24 of 24; AMD EPYC, 2026-12-06), asserted 4 runs lower.
    assert rates["joint"] >= 0.8, rates
    assert rate >= 0.9 and rates["colors"] >= 0.85 and rates["shapes"] >= 0.8, (rate, rates)


@pytest.mark.slow  # 48 samples of 4 candidates x 25 guided steps at 32x32: about 3.5 minutes
def test_the_diffusion_generator_steers_the_colour_and_draws_the_shapes(tmp_path: Path) -> None:
    """Issues 33 and 46: the shapes diffusion model, reading the prompts and guided by the
    shapes CLIP (its preset), 24 prompts (12 colour pairs) x seeds 0 and 1, by the judge."""
    rows = evaluate.run_cases(
        evaluate.prompt_cases(24), [0, 1], tmp_path, 2, generator="diffusion", precision="fp32"
    )
    rate = evaluate.steering_rate(*evaluate.split_pairs(rows, seeds=2))
    rates = evaluate.success_rates(rows)
    print(f"diffusion: steering {rate:.0%} of 48 comparisons; {rates}")
    assert rates["runs"] == 48
    # Measured joint 94% (45 of 48), colours 100%, roles 98%, shapes 96%, steering 100% (AMD
    # EPYC, 2026-12-07; seeds 2 and 3: 44 of 48; docs/shapes.md). Asserted: issue 46's 85%
    # (41 of 48), four runs under the measure, as a candidate that another CPU's float sums
    # tip changes CLIP's pick; each miss so far a shape, so colours keep a tighter bound.
    assert rates["joint"] >= 0.85, rates
    assert rate >= 0.9 and rates["colors"] >= 0.9 and rates["shapes"] >= 0.85, (rate, rates)


@pytest.mark.slow  # 12 + 8 generations: about 2 minutes on a 2-core CPU
def test_region_prompts_put_their_shapes_in_their_halves(tmp_path: Path) -> None:
    """Issue 50's checks: "a red circle on a blue background @left" (the VQGAN preset, seeds
    0-11) gives the judged red circle on blue with its centre in the left half; a red circle
    @left and a green square @right (the pixels preset, seeds 0-7) give each shape in its
    half, each half judged as an image of its own."""
    left = evaluate.PromptCase("a red circle on a blue background @left", "red", "circle", "blue")
    rows = evaluate.run_cases([left], list(range(12)), tmp_path, 2, precision="fp32")
    placed = [
        (r["judged_color"], r["judged_shape"], r["judged_background"]) == ("red", "circle", "blue")
        and r["centre"][0] < 32
        for r in rows
    ]
    print("@left:", [(r["judged_shape"], r["centre"]) for r in rows])
    # Measured 12 of 12 red circles on blue, centres at x 18 to 23 of 64 (AMD EPYC, fp32), and
    # 11 of 12 in the precision auto picks; 5 of 12 before each region was redrawn as a scene
    # of its own and 8 of 12 before that scene ran on past the box's edge (docs/usage.md).
    # Issue 50 asks 11 of 12; asserted at 10: fp32's 12 less twice the one run that rounding
    # alone moved here (the other CPU kind sums floats in another order).
    assert all(r["centre"] is not None and r["centre"][0] < 32 for r in rows), rows
    assert sum(placed) >= 10, placed
    both = evaluate.PromptCase(
        "a red circle on a blue background @left | a green square on a blue background @right",
        "green", "square", "blue",
    )  # fmt: skip
    rows = evaluate.run_cases([both], list(range(8)), tmp_path, 2, generator="pixels", precision="fp32")  # fmt: skip
    halves = [r["halves"] for r in rows]
    print("@left | @right, pixels:", halves)
    wanted = [("red", "circle", "blue"), ("green", "square", "blue")]
    # Measured 6 of 6 (seeds 0-5, AMD EPYC); the issue asks 75%, asserted as 6 of 8.
    assert sum(h == wanted for h in halves) >= 6, halves
