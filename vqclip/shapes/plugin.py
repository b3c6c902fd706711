"""The shapes world's registrations: its bundled models, their presets, its prior's kind, and one
objective term, image transform and depth estimator (:mod:`vqclip.shapes.kinds`).

Named in ``pyproject.toml`` under the ``vqclip.plugins`` entry points; vqclip calls
:func:`register` the first time it looks up a model, a preset or a prior kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqclip.core.plugins import (
    Estimator,
    TermKind,
    TransformKind,
    register_estimator,
    register_term,
    register_transform,
)  # fmt: skip
from vqclip.core.presets import OPTIMISED_ONLY, Preset, register_preset
from vqclip.models.prior import register_prior_kind
from vqclip.models.registry import ModelEntry, ModelFile, register_model

__all__ = ["WEIGHTS", "SETTINGS", "PIXEL_SETTINGS", "DIFFUSION_SETTINGS", "register"]

WEIGHTS = Path(__file__).parent / "weights"

# What the shapes models draw their prompts with (`make demo`, the tests and `evaluate`); the
# measurements behind each value are in docs/shapes.md.
SETTINGS: dict[str, Any] = {
    "width": 64,
    "height": 64,
    "cutn": 16,
    "max_iterations": 30,  # with the pull in the VQGAN's latent, 60 drew no better
    "step_size": 0.2,
    "step_decay": 10,  # the last third settles on the prior's redrawing: shapes 91% -> 98%
    "start": "palette",
    "latent_levels": 3,  # regions move together: the share of right shapes doubles
    "prior": "shapes-prior",  # pulls the loop's blobs toward clean shapes
    "prior_weight": 24.0,  # reached halfway: CLIP sets colours early, the pull the outline late
    "prior_ramp": 15,
    "best_of": 3,  # three palette candidates; CLIP and the prior's pull keep one
    "upscaler": "shapes-upscaler",
    "augments": ("Af", "Pe", "Ji", "Er"),
}
# The pixels generator on the shapes CLIP: an RGB image moves a step per pixel, so smaller steps;
# the step's fall drew no better here (96 runs: joint 98% with it, 99% without).
PIXEL_SETTINGS: dict[str, Any] = {**SETTINGS, "step_size": 0.03, "step_decay": 0}
# The shapes diffusion model samples at its training size; it draws clean shapes, so no prior.
DIFFUSION_SETTINGS: dict[str, Any] = {
    **{k: v for k, v in SETTINGS.items() if k not in OPTIMISED_ONLY},
    "width": 32,
    "height": 32,
    "max_iterations": 25,  # sampling steps (the 1000 of training respaced): 50 drew no better
    "best_of": 4,  # four samples in one batch; CLIP keeps the closest (3: joint 92%, 5: 93%)
    "prior": None,
    "prior_weight": 0.0,
    "prior_ramp": 0,
    "clip_guidance_scale": 30000.0,  # with clamp_max: most steps move by clamp_max
    "tv_scale": 0.0,
    "range_scale": 0.0,
    "cond_scale": 3.0,  # the model reads the prompts: classifier-free guidance (5 drew no better)
    "clamp_max": 0.3,  # the noisiest step magnifies the gradient ~2e4 times; 0.3 holds colours best
    "augments": ("Af", "Ji"),  # the shapes CLIP's own training augments (docs/shapes.md)
}


def register() -> None:
    """Add the shapes models, their presets and the shapes prior's kind to vqclip."""
    from vqclip.shapes.prior import ScenePrior

    register_model(
        ModelEntry(
            "shapes-vqgan",
            "vqgan",
            (ModelFile("shapes_vqgan.yaml", kind="yaml"), ModelFile("shapes_vqgan.ckpt")),
            4.2,
            WEIGHTS,
        )
    )
    clip_file = ModelFile("shapes_clip.pt", kind="clip")
    register_model(ModelEntry("shapes-clip", "clip", (clip_file,), 17.1, WEIGHTS))
    vit_file = ModelFile("shapes_clip_vit.pt", kind="clip")  # the second, for ensembles offline
    register_model(ModelEntry("shapes-clip-vit", "clip", (vit_file,), 7.9, WEIGHTS))
    register_model(
        ModelEntry("shapes-prior", "prior", (ModelFile("shapes_prior.pt"),), 1.9, WEIGHTS)
    )
    diffusion_files = (ModelFile("shapes_diffusion.json", kind="json"), ModelFile("shapes_diffusion.pt"))  # fmt: skip
    register_model(ModelEntry("shapes-diffusion", "diffusion", diffusion_files, 7.7, WEIGHTS))
    upscaler_file = ModelFile("shapes_upscaler.pth")  # an ESRGAN RRDBNet, 4x, trained on renders
    register_model(ModelEntry("shapes-upscaler", "upscaler", (upscaler_file,), 0.6, WEIGHTS))
    register_preset(Preset("shapes", {"generator": "vqgan", "vqgan": "shapes-vqgan"}, SETTINGS))
    register_preset(
        Preset(
            "shapes diffusion",
            {"generator": "diffusion", "diffusion_model": "shapes-diffusion"},
            DIFFUSION_SETTINGS,
        )
    )
    register_preset(
        Preset(
            "shapes pixels", {"generator": "pixels", "clip_model": "shapes-clip"}, PIXEL_SETTINGS
        )
    )
    register_prior_kind("shapes-scene", ScenePrior)
    from vqclip.shapes.kinds import load_depth, make_mirror, make_palette_term

    register_term(TermKind("shapes-palette", "pixels toward the data set's six flat colours", make_palette_term))  # fmt: skip
    register_transform(TransformKind("shapes-mirror", "the left half mirrored onto the right", make_mirror))  # fmt: skip
    register_estimator(Estimator("shapes-depth", "depth", "a shape at 1 before its background at 2", load_depth))  # fmt: skip
