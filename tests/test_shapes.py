"""The shapes world: data set, judge, shipped models, and generations that follow the prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vqclip import zoo
from vqclip.models import load_clip, load_vqgan
from vqclip.shapes import evaluate
from vqclip.shapes.data import COLORS, SHAPES, caption, render, sample_scenes
from vqclip.shapes.train import train_clip, train_vqgan
from vqclip.tuning import cpu_flags


def test_data_set_is_seeded_and_varied() -> None:
    first = sample_scenes(300, torch.Generator().manual_seed(3))
    again = sample_scenes(300, torch.Generator().manual_seed(3))
    assert first == again and torch.equal(render(first[:4]), render(again[:4]))
    assert {s.color for s in first} == set(COLORS) and {s.shape for s in first} == set(SHAPES)
    assert all(s.color != s.background for s in first)
    assert len({round(s.radius) for s in first}) > 8 and len({round(s.cx) for s in first}) > 20
    captions = {caption(s, torch.Generator().manual_seed(i)) for i, s in enumerate(first[:60])}
    assert len(captions) > 40


def test_judge_on_fresh_data_set_images() -> None:
    accuracy = evaluate.judge_accuracy(count=200, seed=2026)
    assert accuracy["colors"] >= 0.98 and accuracy["shapes"] >= 0.95, accuracy


def test_shipped_models_load_through_the_registry_and_are_small() -> None:
    yaml_path, ckpt_path = zoo.resolve_vqgan("shapes-vqgan")
    clip_path = zoo.resolve_clip("shapes-clip")
    assert yaml_path.parent == clip_path.parent == zoo.SHAPES_DIR
    total = sum(p.stat().st_size for p in (yaml_path, ckpt_path, clip_path))
    assert total <= 25 * 2**20, f"{total / 2**20:.1f} MB"
    vqgan = load_vqgan(yaml_path, ckpt_path)
    clip_model = load_clip(clip_path)
    assert vqgan.spec.factor == 4 and clip_model.visual.input_resolution == 64


def test_shipped_clip_zero_shot_is_far_above_chance() -> None:
    clip_model = load_clip(zoo.resolve_clip("shapes-clip"))
    accuracy = evaluate.zero_shot_accuracy(clip_model)
    print("zero-shot accuracy:", accuracy)
    assert accuracy["color"] >= 0.9 and accuracy["background"] >= 0.9, accuracy
    assert accuracy["shape"] >= 0.85, accuracy  # chance: 1/3; measured 0.93


def test_training_scripts_run_and_save_loadable_checkpoints(tmp_path: Path) -> None:
    train_vqgan(steps=2, out=tmp_path, batch=2)
    train_clip(steps=2, out=tmp_path, batch=8)
    vqgan = load_vqgan(tmp_path / "shapes_vqgan.yaml", tmp_path / "shapes_vqgan.ckpt")
    clip_model = load_clip(tmp_path / "shapes_clip.pt")
    assert vqgan.codebook.shape[0] == 256 and clip_model.context_length == 24


def test_dream_pool_draws_toward_its_captions_and_renews() -> None:
    from vqclip.embeddings import similarity
    from vqclip.shapes.train import DreamPool

    vqgan = load_vqgan(*zoo.resolve_vqgan("shapes-vqgan"))
    clip_model = load_clip(zoo.resolve_clip("shapes-clip"))
    pool = DreamPool(vqgan, 4, torch.Generator().manual_seed(0))
    first = pool.advance(clip_model, 1)
    later = pool.advance(clip_model, 8)
    assert first.shape == (4, 3, 64, 64) and 0 <= later.min() and later.max() <= 1
    # The loop's steps pull each dream toward its own caption under the CLIP it is fooling.
    before = similarity(clip_model, first, pool.captions).diagonal()
    after = similarity(clip_model, later, pool.captions).diagonal()
    assert after.mean() > before.mean() + 0.02, (before, after)
    captions = list(pool.captions)
    pool.renew(2)
    assert pool.captions[2:] == captions[2:] and pool.captions[:2] != captions[:2]


@pytest.fixture(scope="module")
def generations(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """12 colour pairs x 2 seeds, generated once for the steering and success checks."""
    out = tmp_path_factory.mktemp("shapes-runs")
    return evaluate.run_cases(evaluate.prompt_cases(24), [0, 1], out, jobs=2)


def test_steering_follows_the_prompted_colour(generations: list[dict]) -> None:
    firsts, seconds = evaluate.split_pairs(generations, seeds=2)
    assert [a["prompt"].replace(a["color"], "?") for a in firsts] == [
        b["prompt"].replace(b["color"], "?") for b in seconds
    ]
    rate = evaluate.steering_rate(firsts, seconds)
    print(f"steering: {rate:.0%} of {2 * len(firsts)} comparisons")
    # Chance is 0.5. Measured 0.94 (palette start, 3 latent levels); issue 3: 0.9.
    assert rate >= 0.85


def test_prompt_success_as_the_judge_sees_it(generations: list[dict]) -> None:
    rates = evaluate.success_rates(generations)
    print("prompt success:", rates)
    assert rates["runs"] == 48
    # Chance that the two prompted colours are the two largest of six is 1/15. Measured with the
    # palette start and 3 latent levels: colours 0.75, shapes 0.17. Issue 3 asks for 0.7 (met;
    # best of 3 asserts it below) and 0.5 for shapes (not met, reported in the README).
    assert rates["colors"] >= 0.65, rates


@pytest.mark.slow
@pytest.mark.skipif(
    not {"avx512_bf16", "amx_bf16"} & cpu_flags(),
    reason="this CPU has no bf16 instructions (AVX-512 BF16 or AMX): bf16 autocast is emulated, "
    "120 s per shapes image against 9 s in fp32, too slow for 48 runs; the guard runs where "
    "bf16 has hardware support (README, quality guard); test_optimize runs bf16 on tiny models",
)
def test_fast_path_keeps_prompt_success(tmp_path: Path, generations: list[dict]) -> None:
    """The quality guard: bf16 autocast reaches fp32's prompt-success rates within noise."""
    fast = evaluate.success_rates(
        evaluate.run_cases(evaluate.prompt_cases(24), [0, 1], tmp_path, 2, precision="bf16")
    )
    exact = evaluate.success_rates(generations)
    print("fp32:", exact, "bf16:", fast)
    assert fast["colors"] >= exact["colors"] - 0.15 and fast["shapes"] >= exact["shapes"] - 0.15


@pytest.mark.slow
def test_best_of_three_meets_the_colour_target(tmp_path: Path) -> None:
    """Palette start with three candidates per image (the next best colours), CLIP keeps one."""
    rows = evaluate.run_cases(evaluate.prompt_cases(24), [0, 1], tmp_path, jobs=2, best_of=3)
    rates = evaluate.success_rates(rows)
    rate = evaluate.steering_rate(*evaluate.split_pairs(rows, 2))
    print("best of 3:", rates, "steering:", rate)
    # Measured: colours 0.90, shapes 0.10, steering 0.98. Issue 3: colours 0.7, shapes 0.5.
    assert rates["colors"] >= 0.7 and rate >= 0.85, (rates, rate)
