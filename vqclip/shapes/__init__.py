"""The shapes world: a seeded data set, a tiny VQGAN and CLIP trained on it, and a judge.

Its measured generation settings live here, with no heavy imports, so that the CLI and the
notebook can fill them in for its models.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SHAPES_SETTINGS", "shapes_defaults"]

# Settings of the shapes world's generations: `make demo`, the tests and `evaluate` use them.
SHAPES_SETTINGS: dict[str, Any] = {
    "vqgan": "shapes-vqgan",
    "clip_model": "shapes-clip",
    "width": 64,
    "height": 64,
    "cutn": 16,
    "max_iterations": 60,
    "step_size": 0.2,
    "start": "palette",
    "latent_levels": 3,  # regions move together: shapes 8% -> 17% (an earlier CLIP)
    "prior": "shapes-prior",  # pulls the loop's blobs toward clean shapes (README)
    "prior_weight": 12.0,  # reached at the last step: CLIP sets colours early, the pull shapes late
    "prior_ramp": 60,
    "best_of": 3,  # three palette candidates; CLIP and the prior's pull keep one (README)
    "display_frequency": 20,
    "device": "cpu",
}


def shapes_defaults(vqgan: str) -> dict[str, Any]:
    """The settings to fill in for a run on ``vqgan`` where the user gave none: the shapes
    world's generation settings for its own VQGAN (not its device, frame rate or model names),
    nothing for any other model, whose classic defaults are the ones to keep."""
    if vqgan != SHAPES_SETTINGS["vqgan"]:
        return {}
    kept = ("vqgan", "clip_model", "display_frequency", "device")
    return {key: value for key, value in SHAPES_SETTINGS.items() if key not in kept}
