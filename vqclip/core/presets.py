"""Presets: each model's default settings, declared once, with the model.

A field of :class:`~vqclip.core.config.GenerationConfig` left unset (``None``, or ``"auto"`` for
``prior``) takes the value of the preset that matches the config: the most specific one whose
``match`` fields all equal the config's. The core declares the classic settings of the VQGAN+CLIP
notebooks; a plugin declares its models' own (the shapes world's tiny models draw blobs with the
classic ones). The CLI, the notebook, the Python API and the evaluations all resolve a config
here, so that ``generate(GenerationConfig(prompts=p, seed=0))`` makes the image that ``vqclip
generate p --seed 0`` makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vqclip.core.plugins import load_plugins

if TYPE_CHECKING:
    from vqclip.core.config import GenerationConfig

__all__ = [
    "PRESET_FIELDS",
    "preset_fields",
    "Preset",
    "register_preset",
    "presets",
    "preset_for",
    "unset_fields",
    "apply",
]

# The fields a preset may set: the ones whose good value depends on the model. Some are read
# by one kind of generator only: a preset for that kind states them, a preset for the other
# does not (and a run of it records none).
PRESET_FIELDS = ("width", "height", "cutn", "max_iterations", "step_size", "step_decay", "start",
                 "latent_levels", "best_of", "prior", "prior_weight", "prior_ramp",
                 "clip_guidance_scale", "tv_scale", "range_scale", "clamp_max", "cond_scale", "upscaler",
                 "augments")  # fmt: skip
# an optimised image's (vqgan, pixels)
OPTIMISED_ONLY = ("step_size", "step_decay", "start", "latent_levels")
# diffusion's
SAMPLED_ONLY = ("clip_guidance_scale", "tv_scale", "range_scale", "clamp_max", "cond_scale")


def preset_fields(generator: str | None) -> tuple[str, ...]:
    """The preset fields a config of ``generator`` reads (None: any generator's)."""
    if generator is None:
        return PRESET_FIELDS
    other = OPTIMISED_ONLY if generator == "diffusion" else SAMPLED_ONLY
    return tuple(name for name in PRESET_FIELDS if name not in other)


@dataclass(frozen=True)
class Preset:
    """Settings for the configs whose ``match`` fields have these values."""

    name: str
    match: dict[str, Any]  # e.g. {"generator": "vqgan", "vqgan": "shapes-vqgan"}; {} matches all
    settings: dict[str, Any] = field(default_factory=dict)  # each of its generator's fields

    def __post_init__(self) -> None:
        wanted = preset_fields(self.match.get("generator"))
        missing = sorted(set(wanted) - set(self.settings))
        extra = sorted(set(self.settings) - set(wanted))
        if missing or extra:
            raise ValueError(
                f"preset {self.name!r}: expected a value for each of {list(wanted)}; "
                f"missing {missing}, not its generator's preset fields {extra}"
            )


# The classic notebooks' settings, at their 256x256.
_CLASSIC = {"width": 256, "height": 256, "cutn": 32, "max_iterations": 100, "step_size": 0.1,
            "step_decay": 0, "start": "random", "latent_levels": 1, "best_of": 1, "prior": None,
            "prior_weight": 0.0, "prior_ramp": 0,
            # CLIP-guided diffusion's (Crowson's 256x256 notebook; tv on [0, 1] pixels, x4)
            "clip_guidance_scale": 1000.0, "tv_scale": 150.0, "range_scale": 50.0,
            "clamp_max": 0.0, "cond_scale": 1.0,  # OpenAI's models read no prompt
            "upscaler": "RealESRGAN_x4plus", "augments": ("Af", "Pe", "Ji", "Er")}  # fmt: skip
_SAMPLED = {**{k: v for k, v in _CLASSIC.items() if k not in OPTIMISED_ONLY}, "max_iterations": 250, "cutn": 16}  # fmt: skip
_CLASSIC = {k: v for k, v in _CLASSIC.items() if k not in SAMPLED_ONLY}
_PRESETS: list[Preset] = [
    Preset("classic", {"generator": "vqgan"}, _CLASSIC),
    # An RGB image moves by the step size per pixel: a VQGAN latent's 0.1 would be a tenth of
    # the whole colour range every step.
    Preset("classic pixels", {"generator": "pixels"}, {**_CLASSIC, "step_size": 0.02}),
    # OpenAI's 256x256 model sampled in 250 respaced steps (Disco Diffusion's default), and the
    # fine-tuned 512x512 one at its own size.
    Preset("classic diffusion", {"generator": "diffusion"}, _SAMPLED),
    Preset(
        "diffusion 512",
        {"generator": "diffusion", "diffusion_model": "512x512_diffusion_uncond_finetune_008100"},
        {**_SAMPLED, "width": 512, "height": 512},
    ),
]


def register_preset(preset: Preset) -> None:
    """Add a preset (a plugin's, for its models); a later one with the same name replaces it."""
    _PRESETS[:] = [p for p in _PRESETS if p.name != preset.name] + [preset]


def presets() -> list[Preset]:
    """Every preset: the core's and the plugins'."""
    load_plugins()
    return list(_PRESETS)


def preset_for(config: GenerationConfig) -> Preset:
    """The most specific preset whose ``match`` fields all equal ``config``'s (an ensemble's
    ``clip_model``: its first model)."""
    load_plugins()
    fits = [p for p in _PRESETS if all(_matched(config, k) == v for k, v in p.match.items())]
    return max(fits, key=lambda p: len(p.match))  # a "classic" one matches every generator


def _matched(config: GenerationConfig, name: str) -> Any:
    """The value a preset's ``match`` compares: an ensemble of CLIPs matches as its first."""
    if name == "clip_model":
        return config.clip_models()[0][0]
    return getattr(config, name)


def unset_fields(config: GenerationConfig) -> list[str]:
    """The preset fields ``config`` leaves to its preset."""
    fields = preset_fields(config.generator)
    unset = [name for name in fields if getattr(config, name) is None and name != "prior"]
    return unset + (["prior"] if config.prior == "auto" else [])


def apply(config: GenerationConfig) -> GenerationConfig:
    """``config`` with its unset fields taken from its preset (a resolved config is unchanged)."""
    unset = unset_fields(config)
    if not unset:
        return config
    settings = preset_for(config).settings
    values = {name: settings[name] for name in unset}
    if config.prior is None:  # no prior: its weight and ramp have nothing to pull toward
        values.update({name: 0 for name in ("prior_weight", "prior_ramp") if name in unset})
    return replace(config, **values)
