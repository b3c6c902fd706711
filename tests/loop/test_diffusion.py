"""CLIP-guided diffusion: the U-Net and schedule against OpenAI's own code, the sampler's bits,
resume, checkpoints, and the generator from the CLI."""

from __future__ import annotations

import json
import pickle
import resource
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.respace import SpacedDiffusion, space_timesteps
from guided_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

from tests.conftest import png_pixels
from tests.run.test_runstate import _assert_same_frames
from vqclip.core.config import GenerationConfig
from vqclip.frontends import cli
from vqclip.loop.diffusion import Sampler, SampleState, make_schedule, pred_xstart
from vqclip.models import registry
from vqclip.models.unet import UNet, UNetSpec, load_unet, save_unet
from vqclip.run.driver import generate, progress_of, resume
from vqclip.run.frames import frame_iteration, read_png_metadata
from vqclip.run.runstate import STATE, read_state
from vqclip.run.video import count_video_frames

# OpenAI's 256x256 model's structure (resblock up/down, scale-shift norm, heads of fixed width,
# learned variances) at a size a test can run.
TINY = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
        "attention_resolutions": "16", "num_head_channels": 16, "learn_sigma": True,
        "resblock_updown": True, "use_scale_shift_norm": True, "diffusion_steps": 1000,
        "noise_schedule": "linear"}  # fmt: skip


def _reference_model(**changes: object) -> torch.nn.Module:
    """OpenAI's UNetModel with TINY's flags, its weights randomised (its output layers start
    at zero)."""
    flags = {**model_and_diffusion_defaults(), **TINY, **changes}
    torch.manual_seed(0)
    model, _ = create_model_and_diffusion(**flags)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI's own class, saved as OpenAI saves its checkpoints (a plain state dict), with its
    flags in a JSON file beside it."""
    root = tmp_path_factory.mktemp("diffusion")
    torch.save(_reference_model().state_dict(), root / "tiny.pt")
    (root / "tiny.json").write_text(json.dumps(TINY))
    return root / "tiny.pt"


@pytest.fixture
def diffusion_config(tiny_config: GenerationConfig, tiny_diffusion: Path) -> GenerationConfig:
    return tiny_config.replace(
        generator="diffusion", diffusion_model=str(tiny_diffusion), max_iterations=8,
        display_frequency=3, clip_guidance_scale=500.0, tv_scale=10.0, range_scale=50.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [{}, {"use_new_attention_order": True, "resblock_updown": False, "learn_sigma": False,
          "use_scale_shift_norm": False, "num_head_channels": -1, "num_heads": 2}],
)  # fmt: skip
def test_the_unet_computes_what_openais_computes_for_the_same_weights(changes: dict) -> None:
    reference = _reference_model(**changes)
    flags = {**TINY, **changes}
    ours = UNet(UNetSpec.from_dict(flags))
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3.0, 811.0])
    with torch.no_grad():
        expected, got = reference(x, t), ours(x, t)
    assert got.shape == (2, 6 if flags["learn_sigma"] else 3, 32, 32)
    assert expected.abs().mean() > 0.01  # not the zero output of an untrained model
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["256x256_diffusion_uncond", "512x512_diffusion_uncond_finetune_008100"])  # fmt: skip
def test_the_registry_flags_build_openais_parameters(name: str) -> None:
    flags = registry.registry()[name].flags
    reference_flags = {**model_and_diffusion_defaults(), **flags, "use_fp16": False}
    reference_flags["attention_resolutions"] = ",".join(map(str, flags["attention_resolutions"]))
    reference_flags["channel_mult"] = ""  # OpenAI's for the image size
    with torch.device("meta"):  # shapes only: no 550M parameters in memory
        reference, _ = create_model_and_diffusion(**reference_flags)
        ours = UNet(UNetSpec.from_dict(flags))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert sum(v.numel() for v in ours.parameters()) > 500e6


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("count", [1000, 250, 50, 7])
def test_the_respaced_schedule_is_openais(schedule: str, count: int) -> None:
    betas = gd.get_named_beta_schedule(schedule, 1000)
    reference = SpacedDiffusion(
        use_timesteps=space_timesteps(1000, str(count)), betas=betas,
        model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )  # fmt: skip
    ours = make_schedule(1000, schedule, count)
    assert ours.timesteps.tolist() == sorted(reference.timestep_map)
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                 "posterior_mean_coef1", "posterior_mean_coef2", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod"):  # fmt: skip
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(reference, name), rtol=1e-7)  # fmt: skip
    np.testing.assert_allclose(
        ours.posterior_log_variance.numpy(), reference.posterior_log_variance_clipped, rtol=1e-7
    )


@pytest.mark.parametrize(("learn_sigma", "sigma_small"), [(True, False), (False, False), (False, True)])  # fmt: skip
def test_a_denoising_step_is_openais(learn_sigma: bool, sigma_small: bool) -> None:
    """The clean estimate, mean and variance of one step, as OpenAI's p_mean_variance gives."""
    reference_model = _reference_model(learn_sigma=learn_sigma)
    ours = UNet(UNetSpec.from_dict({**TINY, "learn_sigma": learn_sigma, "sigma_small": sigma_small}))  # fmt: skip
    ours.load_state_dict(reference_model.state_dict())
    sampler = Sampler.for_unet(ours.eval(), 25)
    reference = SpacedDiffusion(
        use_timesteps=space_timesteps(1000, "25"), betas=gd.get_named_beta_schedule("linear", 1000),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE if learn_sigma else (
            gd.ModelVarType.FIXED_SMALL if sigma_small else gd.ModelVarType.FIXED_LARGE),
        loss_type=gd.LossType.MSE,
    )  # fmt: skip
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for index in (24, 10, 0):
        with torch.no_grad():
            out = reference.p_mean_variance(reference_model, x, torch.tensor([index] * 2), clip_denoised=False)  # fmt: skip
            eps, log_variance = sampler.predict(x, index)
        pred = pred_xstart(sampler.schedule, x, eps, index)
        mean = sampler.schedule.at("posterior_mean_coef1", index, x) * pred + sampler.schedule.at("posterior_mean_coef2", index, x) * x  # fmt: skip
        torch.testing.assert_close(pred, out["pred_xstart"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mean, out["mean"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(log_variance, out["log_variance"].expand_as(x), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_a_guided_sample_is_seeded_saved_and_steered(
    diffusion_config: GenerationConfig,
) -> None:
    first = generate(diffusion_config.replace(run_name="first"))
    again = generate(diffusion_config.replace(run_name="again"))
    _assert_same_frames(again.run_dir, first.run_dir)
    assert [p.name for p in first.frames] == ["000000.png", "000003.png", "000006.png", "000008.png"]  # fmt: skip
    meta = read_png_metadata(first.finals[0])
    assert json.loads(meta["config"])["generator"] == "diffusion" and meta["iteration"] == "8"
    assert GenerationConfig.from_json((first.run_dir / "config.json").read_text()).generator == "diffusion"  # fmt: skip
    assert read_state(first.run_dir / STATE)["iteration"] == 8
    # Guidance moves the sample: the same seed without CLIP's pull ends elsewhere.
    unguided = generate(diffusion_config.replace(run_name="unguided", clip_guidance_scale=0.0, tv_scale=0.0, range_scale=0.0))  # fmt: skip
    assert not np.array_equal(png_pixels(unguided.finals[0]), png_pixels(first.finals[0]))


def _stop_sampling_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Ctrl-C at the ``call``-th sampling step from now (undone by ``monkeypatch.undo()``)."""
    step, calls = Sampler.step, {"n": 0}

    def stopping(sampler, state, guidance, cond=None):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return step(sampler, state, guidance, cond)

    monkeypatch.setattr(Sampler, "step", stopping)


def test_a_stopped_sample_resumes_to_the_bits_of_an_unbroken_one(
    diffusion_config: GenerationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    unbroken = generate(diffusion_config.replace(run_name="unbroken"))
    _stop_sampling_at(monkeypatch, 6)  # after five steps
    stopped = generate(diffusion_config.replace(run_name="stopped"))
    monkeypatch.undo()
    assert stopped.interrupted and read_state(stopped.run_dir / STATE)["iteration"] == 4
    resumed = resume(stopped.run_dir)
    assert not resumed.interrupted
    _assert_same_frames(stopped.run_dir, unbroken.run_dir)
    with pytest.raises(ValueError, match="every step of its schedule"):
        resume(stopped.run_dir)
    with pytest.raises(ValueError, match="follows the schedule it was started on"):
        resume(stopped.run_dir, max_iterations=20)


def test_ddim_batches_perceptors_and_an_init_image(
    diffusion_config: GenerationConfig, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    init = tmp_path / "init.png"
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[8:24, 8:24] = (220, 40, 40)
    from PIL import Image

    Image.fromarray(pixels).save(init)
    config = diffusion_config.replace(
        sampler="ddim", batch_prompts=("a red circle", "a blue square"), prompts="",
        clip_model=f"{tiny_models['clip']} + {tiny_models['clip']}:0.5", init_image=str(init),
        skip_timesteps=6, cutn_batches=2,
    )  # fmt: skip
    done = []
    result = generate(config, callback=lambda info: done.append(progress_of(config).done(info)))
    assert len(result.finals) == 2 and result.image.shape == (2, 3, 32, 32)
    assert done == [1, 2] and progress_of(config).total == 2  # every frontend's bar: 2 of 2
    # Two of eight steps from the init image noised to their level: it still shows.
    red = result.image[:, 0, 8:24, 8:24].mean() - result.image[:, 2, 8:24, 8:24].mean()
    assert red > 0.2
    again = generate(config.replace(cutn_batches=1))
    torch.testing.assert_close(again.image, result.image, atol=2 / 255, rtol=0)


def test_a_checkpoint_that_runs_code_or_does_not_fit_is_refused(
    tiny_diffusion: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("ran code",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"input_blocks.0.0.weight": Payload()}))
    spec = UNetSpec.from_dict(TINY)
    with pytest.raises(ValueError, match="evil.pt"):
        load_unet(evil, spec)
    assert "ran code" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="does not fit the architecture"):
        load_unet(tiny_diffusion, UNetSpec.from_dict({**TINY, "num_channels": 64}))
    with pytest.raises(ValueError, match="unknown flags"):
        UNetSpec.from_dict({**TINY, "class_cond": True})
    saved = tmp_path / "round.pt"
    save_unet(load_unet(tiny_diffusion, spec), saved)
    again = load_unet(saved, UNetSpec.from_dict(json.loads(saved.with_suffix(".json").read_text())))
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([5.0])
    torch.testing.assert_close(again(x, t), load_unet(tiny_diffusion, spec)(x, t))


def test_the_cli_samples_and_names_bad_diffusion_input(
    diffusion_config: GenerationConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["generate", "a red circle", "--generator", "diffusion", "--diffusion_model",
            diffusion_config.diffusion_model, "--clip_model", diffusion_config.clip_model,
            "--width", "32", "--height", "32", "--cutn", "4", "--max_iterations", "4",
            "--device", "cpu", "--seed", "3", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    cli.main([*base, "--video"])
    assert len(list((tmp_path / "out").glob("*/final.png"))) == 1
    assert count_video_frames(next((tmp_path / "out").glob("*/video.mp4"))) >= 2
    bad = {
        "--zoom_every 5": "does not combine with generator diffusion",
        "--skip_timesteps 2": "needs an init_image",
        "--width 31": "not a multiple of the U-Net's factor 2",
        "--max_iterations 2000": "trained with 1000",
        "--sampler euler": "sampler: unknown value 'euler'",
        "--diffusion_model nowhere": "diffusion_model: unknown model 'nowhere'",
    }
    for flags, message in bad.items():
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*base, *flags.split()])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert len(list((tmp_path / "out").glob("*/final.png"))) == 1  # nothing else written


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"num_channels": 4096}, "num_channels is 4096, expected an integer from 1 to 1024"),
        ({"num_channels": 10**400}, "num_channels is 1000"),  # was a build at full size
        ({"num_head_channels": 0}, "num_head_channels is 0, expected -1 or 1 to 1024"),
        ({"diffusion_steps": 1e9}, "diffusion_steps is 1000000000.0, expected an integer"),
        (
            {"diffusion_steps": 10**9},
            "diffusion_steps is 1000000000, expected an integer from 1 to 10000",
        ),  # fmt: skip
        ({"channel_mult": [1] * 100}, "channel_mult is .*, expected 1 to 8 numbers"),
        ({"channel_mult": 7}, "channel_mult is 7, expected a list"),
        ({"channel_mult": "1,x"}, "channel_mult holds 'x'"),
        ({"num_channels": 40}, "are not all multiples of 32"),
        ({"learn_sigma": "yes"}, "learn_sigma is 'yes', expected true or false"),
        ({"attention_resolutions": [10**9]}, "attention_resolutions is"),
        (
            {"cond_dim": 10**9, "cond_clip": "x"},
            "cond_dim is 1000000000, expected an integer from 0",
        ),  # fmt: skip
        ({"cond_dim": 64}, "cond_clip is '' with cond_dim 64, expected a CLIP's name"),
        ({"cond_clip": "shapes-clip"}, "cond_clip is 'shapes-clip' with cond_dim 0"),
    ],
)
def test_flags_are_bounded_before_any_model_is_built(flags: dict, message: str) -> None:
    """Issue 45: a diffusion model's flags built the model at full size, or crashed."""
    with pytest.raises(ValueError, match=message):
        UNetSpec.from_dict({**TINY, **flags})


def test_weights_that_do_not_fit_their_flags_are_refused_on_the_meta_device(
    tiny_diffusion: Path, tmp_path: Path
) -> None:
    """Flags that build a larger U-Net than the file holds are compared with its tensors on the
    meta device: refused without allocating the model they describe."""
    big = UNetSpec.from_dict({**TINY, "num_channels": 1024, "num_res_blocks": 4})  # 1.6 GB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="does not fit the architecture its config describes"):
        load_unet(tiny_diffusion, big)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_a_cut_schedule_sets_each_steps_cuts_for_both_the_loop_and_the_sampler(
    tiny_config,
    tiny_diffusion,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """Disco's cut_overview and cut_innercut spread over the run: the perceptor sees each
    step's overview views plus crops, in an optimisation and in a diffusion sample."""
    from vqclip.loop.perceptors import Perceptor
    from vqclip.run.driver import generate

    encode, seen = Perceptor.encode_image, []

    def counted(self: Perceptor, images: torch.Tensor) -> torch.Tensor:
        seen.append(len(images))
        return encode(self, images)

    monkeypatch.setattr(Perceptor, "encode_image", counted)
    schedule = {"cut_overview": "[3]*2+[1]*2", "cut_innercut": "[2]", "cut_icgray_p": "0.5", "max_iterations": 4}  # fmt: skip
    result = generate(tiny_config.replace(**schedule, best_of=1, run_name="optimised"))
    assert [n for n in seen if n > 1] == [5, 5, 3, 3] and not result.interrupted  # 1: ranking
    seen.clear()
    diffusion = tiny_config.replace(
        generator="diffusion", diffusion_model=str(tiny_diffusion), clip_guidance_scale=500.0,
        tv_scale=10.0, range_scale=50.0, best_of=1, run_name="sampled", **schedule,
    )  # fmt: skip
    generate(diffusion)
    assert [n for n in seen if n > 1] == [5, 5, 3, 3]


def test_a_diffusion_animation_samples_each_moved_frame_back_and_resumes_to_the_same_bits(
    diffusion_config: GenerationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame 0 a sample of 8 steps; each later frame the previous one moved 2 px right,
    noised half way into the schedule and sampled back in 4 steps; stopped in frame 2 and
    resumed, the frames are those of an unbroken run."""
    from vqclip.run.frames import frame_paths
    from vqclip.run.video import assemble_video

    config = diffusion_config.replace(
        animation_mode="2D", max_frames=4, translation_x="2", frame_strength=0.5
    )
    progress = progress_of(config)
    assert (progress.frames, progress.total) == ((8, 4, 4, 4), 8 + 3 * 4)
    assert progress.done({"frame": 3, "iteration": 3}) == progress.total
    unbroken = generate(config.replace(run_name="unbroken"))
    frames = frame_paths(unbroken.run_dir)
    assert [p.name for p in frames] == [f"{k:06d}.png" for k in range(4)]
    assert json.loads(read_png_metadata(frames[2])["motion"])["translation_x"] == 2.0
    assert count_video_frames(assemble_video(unbroken.run_dir)) == 4
    _stop_sampling_at(monkeypatch, 8 + 4 + 2)  # in frame 2
    stopped = generate(config.replace(run_name="stopped"))
    monkeypatch.undo()
    assert stopped.interrupted and len(frame_paths(stopped.run_dir)) == 2
    resume(stopped.run_dir)
    _assert_same_frames(stopped.run_dir, unbroken.run_dir)
    with pytest.raises(ValueError, match="every frame of the animation is made"):
        resume(stopped.run_dir)
    with pytest.raises(ValueError, match="frame_strength: 1 at frame 1; expected a share"):
        config.replace(frame_strength=1.0)


def test_frame_strength_is_a_schedule_each_frame_keeping_its_share(
    diffusion_config: GenerationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deforum's strength_schedule: each frame is noised to its own share of the 8 steps (0.5,
    0.25, then 0 at frames 1-3: a fresh sample), the progress counts each frame's steps, the
    frame's PNG records the share, and a share out of range at any frame is one line. With
    color_coherence each frame's start has frame 0's colours, read back from its PNG."""
    from vqclip.core.images import to_uint8
    from vqclip.run import coherence
    from vqclip.run.frames import frame_paths

    config = diffusion_config.replace(
        animation_mode="2D", max_frames=4, frame_strength="0: (0.75), 3: (0)", color_coherence="rgb"
    )
    progress = progress_of(config)
    assert (progress.frames, progress.total) == ((8, 4, 6, 8), 26)
    assert progress.done({"frame": 2, "iteration": 0}) == 8 + 4 + 1
    run, firsts = Sampler.run, []

    def counted(sampler, state, *args, **kwargs):  # noqa: ANN001, ANN202
        firsts.append(state.first)
        return run(sampler, state, *args, **kwargs)

    monkeypatch.setattr(Sampler, "run", counted)
    kept, match = [], coherence.match_colors
    monkeypatch.setattr(coherence, "match_colors", lambda *a: kept.append(a[1]) or match(*a))
    frames = frame_paths(generate(config).run_dir)
    assert firsts == [7, 3, 5, 7]  # the respaced step each frame starts at
    assert len(kept) == 3 and all(np.array_equal(to_uint8(r[0]), png_pixels(frames[0])) for r in kept)  # fmt: skip
    shares = [json.loads(read_png_metadata(p)["motion"]).get("frame_strength") for p in frames]
    assert shares == [None, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="frame_strength: 1.5 at frame 2; expected a share"):
        config.replace(frame_strength="where(t < 2, 0.5, 1.5)")


def _shape_centre(pixels: np.ndarray) -> tuple[float, float]:
    """The centroid of the pixels unlike the border's median colour: where the shape is."""
    values = pixels.astype(float)
    border = np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])
    ys, xs = np.nonzero(np.abs(values - np.median(border, axis=0)).sum(-1) > 120)
    return float(xs.mean()), float(ys.mean())


@pytest.mark.slow
def test_the_shapes_diffusion_animation_follows_its_camera(tmp_path: Path) -> None:
    """With the bundled shapes diffusion model: translation_x 2 moves the drawn shape right,
    frame after frame, while a still camera keeps it in place (seed 0, 6 frames)."""
    from vqclip.run.frames import frame_paths

    base = GenerationConfig(
        prompts="a red circle on a blue background", generator="diffusion", seed=0,
        animation_mode="2D", max_frames=6, frame_strength=0.8, device="cpu", precision="fp32",
        output_dir=str(tmp_path),
    )  # fmt: skip
    travels = {}
    for name, moves in (("moving", "2"), ("still", "0")):
        frames = frame_paths(generate(base.replace(translation_x=moves, run_name=name)).run_dir)
        centres = [_shape_centre(png_pixels(p)) for p in frames]
        travels[name] = (centres[-1][0] - centres[0][0], max(abs(c[1] - centres[0][1]) for c in centres))  # fmt: skip
        print(name, [tuple(round(v, 1) for v in c) for c in centres])
    assert 5 <= travels["moving"][0] <= 13, travels  # the schedule: 5 moves of 2 px (measured 7)
    assert abs(travels["still"][0]) <= 2 and travels["moving"][1] <= 3, travels


def test_with_cadence_only_every_nth_frame_is_sampled_and_a_stop_resumes_alike(
    diffusion_config: GenerationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vqclip.run.frames import frame_paths

    config = diffusion_config.replace(
        animation_mode="2D", max_frames=5, cadence=2, translation_x="2", frame_strength=0.5
    )
    progress = progress_of(config)
    assert progress.total == 8 + 2 * 4 and progress.done({"frame": 4, "iteration": 3}) == 16
    run, runs = Sampler.run, []

    def counted(sampler, state, *args, **kwargs):  # noqa: ANN001, ANN202
        runs.append(state.first)
        return run(sampler, state, *args, **kwargs)

    monkeypatch.setattr(Sampler, "run", counted)
    unbroken = generate(config.replace(run_name="unbroken"))
    assert runs == [7, 3, 3]  # frames 0, 2 and 4: a sample, then two from half way
    frames = [png_pixels(p).astype(int) for p in frame_paths(unbroken.run_dir)]
    assert len(frames) == 5
    # Frame 1 is frame 0 moved 2 px right (a tween: nothing sampled), edges repeated.
    assert np.abs(frames[1][:, 4:] - frames[0][:, 2:-2]).mean() < 3
    _stop_sampling_at(monkeypatch, 8 + 4 + 1)  # in frame 4
    stopped = generate(config.replace(run_name="stopped"))
    monkeypatch.undo()
    assert stopped.interrupted and len(frame_paths(stopped.run_dir)) == 4  # 0-3, then 4 stopped
    resume(stopped.run_dir)
    _assert_same_frames(stopped.run_dir, unbroken.run_dir)


def test_a_diffusion_animations_prompts_change_at_their_key_frames(
    diffusion_config: GenerationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vqclip.run import driver

    guided, made = [], driver.clip_guidance

    def recorded(loop, *args):  # noqa: ANN001, ANN202
        guided.append(loop.objective.prompts.targets)
        return made(loop, *args)

    monkeypatch.setattr(driver, "clip_guidance", recorded)
    config = diffusion_config.replace(
        prompts="0: a red circle | 2: a green square", animation_mode="2D", max_frames=4
    )
    generate(config)
    assert len(guided) == 4 and guided[0] is guided[1] and guided[2] is guided[3]
    assert not torch.equal(guided[1][0].embeds, guided[2][0].embeds)  # the key at frame 2
    guided.clear()
    generate(config.replace(prompt_blend=1))  # frame 2 half each, frame 3 the new prompt
    assert [t[0].names for t in guided] == [("a red circle",)] * 2 + [("a red circle", "a green square"), ("a green square",)]  # fmt: skip
    assert guided[2][0].weights.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="phases"):  # a still sample has no frames to key
        diffusion_config.replace(prompts="a red circle ^ a green square")


def test_a_diffusion_sample_can_be_symmetric_and_a_seamless_tile(
    diffusion_config: GenerationConfig,
) -> None:
    from vqclip.run.build import prepare_sample, resolve_device

    mirrored = generate(diffusion_config.replace(symmetry="horizontal", run_name="mirrored"))
    assert torch.equal(mirrored.image, mirrored.image.flip(-1))  # each step's sample mirrored
    turned = generate(diffusion_config.replace(symmetry="rotate4", run_name="turned"))
    assert torch.equal(turned.image, torch.rot90(turned.image, 1, (-2, -1)))
    # Disco's transformation_percent [0.5]: mirrored once, at step 4 of 8, free before and after.
    once = generate(diffusion_config.replace(symmetry="horizontal", symmetry_at=(0.5,), display_frequency=1, run_name="once"))  # fmt: skip
    frames = {frame_iteration(path): png_pixels(path) for path in once.frames}
    mirrored = [k for k, pixels in frames.items() if np.array_equal(pixels, pixels[:, ::-1])]
    assert mirrored[0] == 4 and max(frames) not in mirrored, mirrored  # then moving freely
    tile = diffusion_config.replace(tile=True, run_name="tile")
    assert (generate(tile).run_dir / "tiled.png").is_file()
    _, sampler, _ = prepare_sample(tile, resolve_device("cpu"))
    x, t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([500.0])  # fmt: skip
    with torch.no_grad():  # the U-Net on the torus: a rolled input, the rolled output
        assert torch.allclose(sampler.model(x.roll(8, -1), t), sampler.model(x, t).roll(8, -1), atol=1e-4)  # fmt: skip


def test_a_model_that_reads_the_prompts_is_guided_free_of_a_classifier(
    diffusion_config: GenerationConfig, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A U-Net with cond_dim reads its CLIP's embedding of the prompts; cond_scale pushes its
    estimate along the line from the unconditional (0) through the conditional (1)."""
    clip = str(tiny_models["clip"])
    dim = torch.load(clip, weights_only=True)["text_projection"].shape[1]
    flags = {**TINY, "cond_dim": dim, "cond_clip": clip}
    torch.manual_seed(0)
    unet = UNet(UNetSpec.from_dict(flags)).eval()
    for parameter in unet.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    torch.nn.init.normal_(unet.cond_embed.weight)  # a condition that matters
    x, cond = torch.randn(2, 3, 32, 32), torch.nn.functional.normalize(torch.randn(2, dim), dim=1)
    sampler = Sampler.for_unet(unet, 5, cond_scale=3.0)
    with torch.no_grad():
        free, conditional, pushed = (
            replace(sampler, cond_scale=s).predict(x, 2, cond)[0] for s in (0.0, 1.0, 3.0)
        )
        unconditional = sampler.predict(x, 2, torch.zeros_like(cond))[0]
    torch.testing.assert_close(pushed, free + 3 * (conditional - free), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unconditional, free, rtol=1e-4, atol=1e-5)
    assert (conditional - free).abs().mean() > 1e-3  # the condition changes the estimate
    # The guidance magnifies the U-Net's rounding: under bf16 a step is the fp32 one, to the bit
    # (the CLIPs alone take bf16); without the push (cond_scale 1) bf16 rounds it.
    steps = {}
    for precision, scale in (("fp32", 3.0), ("bf16", 3.0), ("bf16", 1.0), ("fp32", 1.0)):
        state = SampleState(x.clone(), torch.zeros_like(x), torch.Generator().manual_seed(0), 4)
        chosen = Sampler.for_unet(unet, 5, precision=precision, cond_scale=scale)
        steps[precision, scale] = chosen.step(state, lambda *_: (torch.zeros_like(x), {}), cond)["image"]  # fmt: skip
    assert torch.equal(steps["bf16", 3.0], steps["fp32", 3.0])
    assert not torch.equal(steps["bf16", 1.0], steps["fp32", 1.0])
    torch.save(unet.state_dict(), tmp_path / "cond.pt")
    (tmp_path / "cond.json").write_text(json.dumps(flags))
    config = diffusion_config.replace(diffusion_model=str(tmp_path / "cond.pt"), max_iterations=4)
    guided = generate(config.replace(run_name="guided", cond_scale=3.0))
    plain = generate(config.replace(run_name="plain", cond_scale=1.0))
    assert not np.array_equal(png_pixels(guided.finals[0]), png_pixels(plain.finals[0]))
    assert json.loads((guided.run_dir / "config.json").read_text())["cond_scale"] == 3.0
    with pytest.raises(ValueError, match=r"reads .*clip.pt's embeddings of the prompts; expected clip_model to name"):  # fmt: skip
        generate(config.replace(run_name="other", clip_model=str(tiny_models["clip48"])))
