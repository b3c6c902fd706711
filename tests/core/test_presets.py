"""Presets and plugins: one place for each model's settings; the core never imports a plugin."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import png_pixels
from vqclip.core import presets
from vqclip.core.config import GenerationConfig
from vqclip.frontends import cli
from vqclip.shapes.plugin import PIXEL_SETTINGS, SETTINGS

PROMPT = "a red circle on a blue background"


def test_importing_the_core_loads_no_plugin_and_patches_nothing() -> None:
    code = (
        "import sys\n"
        "import taming.modules.diffusionmodules.model as blocks\n"
        "classic = blocks.nonlinearity\n"
        "import vqclip, vqclip.frontends.cli, vqclip.frontends.notebook, vqclip.run.driver, vqclip.run.build\n"
        "import vqclip.models.registry, vqclip.core.presets, vqclip.models.vqgan_clip, vqclip.run.restyle, vqclip.run.video\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('vqclip.shapes', 'vqclip.bench')))\n"
        "assert loaded == [], loaded\n"
        "assert blocks.nonlinearity is classic, 'importing vqclip rebound taming'\n"
        "from vqclip import zoo\n"
        "assert 'shapes-vqgan' in zoo.registry()  # the plugin registers on first look-up\n"
        "assert 'vqclip.shapes.plugin' in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_preset_follows_the_generator_and_the_models() -> None:
    shapes = presets.apply(GenerationConfig(prompts=PROMPT))
    assert {k: getattr(shapes, k) for k in SETTINGS} == SETTINGS
    pixels = presets.apply(GenerationConfig(prompts=PROMPT, generator="pixels"))
    assert {k: getattr(pixels, k) for k in PIXEL_SETTINGS} == PIXEL_SETTINGS
    classic = presets.apply(GenerationConfig(prompts=PROMPT, vqgan="x/model.yaml"))
    assert (classic.width, classic.start, classic.best_of, classic.prior) == (
        256,
        "random",
        1,
        None,
    )
    given = presets.apply(GenerationConfig(prompts=PROMPT, cutn=8, prior=None))
    assert given.cutn == 8 and given.prior is None and given.prior_weight == 0  # kept; no pull
    assert presets.apply(shapes) is shapes  # a resolved config (a run's config.json) as it is


def test_a_plugins_preset_must_name_every_field() -> None:
    with pytest.raises(ValueError, match="missing \\['augments', 'best_of'"):
        presets.Preset("half", {"vqgan": "x"}, {"width": 64})


def test_a_preset_states_only_its_own_generators_settings() -> None:
    """Issue 47: a VQGAN preset names no diffusion setting, a diffusion one no step size; a
    run records only what its generator reads."""
    shapes = {
        k: v for k, v in presets.preset_for(GenerationConfig(prompts=PROMPT)).settings.items()
    }
    with pytest.raises(ValueError, match="not its generator's preset fields \\['clamp_max'\\]"):
        presets.Preset("mixed", {"generator": "vqgan", "vqgan": "x"}, {**shapes, "clamp_max": 0.3})
    optimised = presets.apply(GenerationConfig(prompts=PROMPT))
    sampled = presets.apply(GenerationConfig(prompts=PROMPT, generator="diffusion"))
    assert optimised.clip_guidance_scale is None and optimised.step_size == 0.2
    assert sampled.step_size is None and sampled.clip_guidance_scale == 30000.0
    assert presets.unset_fields(optimised) == presets.unset_fields(sampled) == []


def test_cli_fills_in_the_preset_where_no_flag_is_given(tmp_path: Path) -> None:
    parse = cli._parser().parse_args
    config, filled = cli._config_from_args(parse(["generate", PROMPT, "--cutn", "8"]))
    assert config.cutn == 8 and "cutn" not in filled  # a flag given is kept
    assert filled == {k: v for k, v in SETTINGS.items() if k != "cutn"}
    assert config.display_frequency == 10 and config.device == "auto"  # not the evaluation's
    saved = tmp_path / "config.json"  # a saved config is repeated as it is: nothing filled in
    saved.write_text(config.replace(start="random", best_of=1).to_json())
    again, filled = cli._config_from_args(parse(["generate", "--config", str(saved)]))
    assert filled == {} and again.start == "random" and again.best_of == 1


def test_the_python_api_and_the_cli_make_the_same_image(tmp_path: Path) -> None:
    from vqclip.run.driver import generate

    short = {"max_iterations": 6, "display_frequency": 3}
    api = generate(GenerationConfig(prompts=PROMPT, seed=0, output_dir=str(tmp_path / "api"), **short))  # fmt: skip
    flags = [f"--{k}={v}" for k, v in short.items()]
    cli.main(["generate", PROMPT, "--seed", "0", "--output_dir", str(tmp_path / "cli"), *flags])
    (run_dir,) = (tmp_path / "cli").iterdir()
    assert api.config.best_of == 3 and api.config.prior == "shapes-prior"  # the preset's
    assert np.array_equal(png_pixels(api.finals[0]), png_pixels(run_dir / "final.png"))


def test_the_notebook_leaves_its_auto_values_to_the_preset() -> None:
    from vqclip.frontends import notebook

    form = notebook.preset_settings(width=0, cutn=0, start="auto", latent_levels=2)
    assert form == {"width": None, "cutn": None, "start": None, "latent_levels": 2}
    config = notebook.resolve(GenerationConfig(prompts=PROMPT, seed=3, **form))
    assert (config.width, config.cutn, config.start) == (64, 16, "palette")
    assert config.latent_levels == 2 and config.seed == 3  # what the form sets is kept


def test_the_model_cache_is_explicit_and_can_be_cleared(tiny_config: GenerationConfig) -> None:
    from vqclip.run.build import MODELS, load_models, resolve_device

    first = load_models(tiny_config, resolve_device("cpu"))
    assert load_models(tiny_config, resolve_device("cpu"))[1][0] is first[1][0]  # loaded once
    MODELS.clear()  # what the notebook's "free memory" does: the next run loads afresh
    assert load_models(tiny_config, resolve_device("cpu"))[1][0] is not first[1][0]


def test_an_old_runs_config_json_replays_as_it_was_saved() -> None:
    """A config.json from before the generators and presets (no generator, pixel_scale or
    precision_choice keys; prior null for no prior) reads back unchanged: no preset applies."""
    saved = presets.apply(GenerationConfig(prompts=PROMPT, seed=5, prior=None, precision="fp32"))
    old = {k: v for k, v in saved.to_dict().items() if k not in ("generator", "pixel_scale", "precision_choice")}  # fmt: skip
    again = GenerationConfig.from_dict(old)
    assert presets.unset_fields(again) == [] and presets.apply(again) == again
    assert again.prior is None and again.generator == "vqgan" and again.best_of == 3


def test_an_ensemble_takes_its_first_models_preset() -> None:
    ensemble = GenerationConfig(prompts=PROMPT, clip_model="shapes-clip + shapes-clip-vit:0.5")
    assert presets.preset_for(ensemble).name == "shapes"
    pixels = ensemble.replace(generator="pixels")
    assert presets.preset_for(pixels).name == "shapes pixels"
    other = pixels.replace(clip_model="shapes-clip-vit + shapes-clip")
    assert presets.preset_for(other).name == "classic pixels"
