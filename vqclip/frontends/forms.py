"""The settings forms of the notebook and the web UI, read into a config the same way.

A form shows every field, so "left to the model" has to be a value: 0 or "auto". These turn a
form's values into a :class:`~vqclip.core.config.GenerationConfig` as the CLI would build it.
"""

from __future__ import annotations

from typing import Any

from vqclip.core.config import GenerationConfig

__all__ = [
    "animation_settings",
    "choose_models",
    "composition_settings",
    "image_settings",
    "preset_settings",
    "prompt_settings",
    "resolve",
    "video_settings",
]


def choose_models(
    vqgan: str = "auto", clip_model: str = "auto", diffusion_model: str = "auto"
) -> tuple[str, str, str]:
    """Resolve "auto": imagenet_f16_16384, ViT-B/32 and OpenAI's 256x256 diffusion model on a
    GPU, the shapes world's models on a CPU."""
    import torch

    gpu = torch.cuda.is_available()
    if vqgan == "auto":
        vqgan = "imagenet_f16_16384" if gpu else "shapes-vqgan"
    if clip_model == "auto":
        clip_model = "ViT-B/32" if gpu else "shapes-clip"
    if diffusion_model == "auto":
        diffusion_model = "256x256_diffusion_uncond" if gpu else "shapes-diffusion"
    return vqgan, clip_model, diffusion_model


def preset_settings(**form: Any) -> dict[str, Any]:
    """The form's settings, its "auto" values (0, or "auto") left to the model's preset
    (:mod:`vqclip.core.presets`): the shapes world's measured settings for its models, the classic
    ones for the others, as the CLI and the Python API take them."""
    return {key: None if value in (0, "auto") else value for key, value in form.items()}


def resolve(config: GenerationConfig) -> GenerationConfig:
    """The form's config with its seed picked and its preset applied, as the run will record it
    (so that the cell can print the seed and size the preview)."""
    from vqclip.core import presets
    from vqclip.core.config import resolve_seed

    return presets.apply(resolve_seed(config))


def prompt_settings(prompts: str, batch_prompts: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The config's prompt fields from the form: ``batch_prompts``, when given, replace
    ``prompts`` (one entry per image of the batch)."""
    if batch_prompts:
        return {"prompts": "", "batch_prompts": tuple(batch_prompts)}
    return {"prompts": prompts, "batch_prompts": ()}


# The animation fields a form shows, in order: the mode and its counts, then the schedules.
ANIMATION_FIELDS = ("animation_mode", "max_frames", "first_frame_steps", "steps_per_frame",
                    "zoom", "angle", "translation_x", "translation_y", "translation_z",
                    "rotation_3d_x", "rotation_3d_y", "rotation_3d_z", "fov", "depth_model",
                    "frame_strength", "cadence", "prompt_blend", "color_coherence", "fps",
                    "padding_mode", "sampling_mode", "save_depth", "frame_noise",
                    "frame_contrast")  # fmt: skip
SCHEDULE_HELP = '"1.05", keyframes "0: (1.0), 50: (1.05)", or an expression of t: "2*sin(t/5)"'


COMPOSITION_FIELDS = ("symmetry", "tile", "palette", "palette_weight", "saturation_weight", "contrast_weight",
                      "symmetry_share", "symmetry_at", "start", "cut_overview", "cut_innercut",
                      "cut_icgray_p", "cut_ic_pow", "terms", "transforms")  # fmt: skip


def composition_settings(**form: Any) -> dict[str, Any]:
    """The form's composition fields as config fields: ``symmetry_at`` typed as shares
    ("0.09, 0.5"; empty: none), each read as a number, never evaluated; ``start`` "auto" left
    to the preset."""
    settings = {key: value for key, value in form.items() if value is not None}
    if settings.get("start") == "auto":
        del settings["start"]
    text = settings.pop("symmetry_at", "")
    if isinstance(text, str) and text.strip():
        try:
            settings["symmetry_at"] = tuple(float(part) for part in text.split(","))
        except ValueError:
            raise ValueError(f"symmetry_at: {text[:80]!r}; expected shares of the steps joined by commas, such as 0.09, 0.5") from None  # fmt: skip
    elif isinstance(text, list | tuple):
        settings["symmetry_at"] = tuple(text)
    return settings


def animation_settings(**form: Any) -> dict[str, Any]:
    """The form's animation fields as config fields; none at all with ``animation_mode``
    "none", so that a still's config records none. Counts of 0 are whole numbers."""
    if form.get("animation_mode", "none") == "none":
        return {}
    counts = ("max_frames", "first_frame_steps", "steps_per_frame", "cadence", "prompt_blend")

    def field(key: str, value: Any) -> Any:  # the rest are schedules and choices: text
        if key in counts:
            return int(value or 0)
        if key == "fps":
            return float(value) if value else None  # 0: the default rate
        return value if key == "save_depth" else str(value)

    return {key: field(key, value) for key, value in form.items()}


# The restyle's and the sound's fields a form shows, in order: the video (a path; "" for none),
# how much of it, how its frames follow each other, then the sound under the run's video.
VIDEO_FIELDS = ("init_video", "video_frames", "video_fps", "video_stride", "frame_init_weight",
                "temporal_weight", "flow_warp", "flow_blend", "flow_weight", "flow_long_term",
                "flow_estimator", "soundtrack", "soundtrack_offset")  # fmt: skip


def video_settings(**form: Any) -> dict[str, Any]:
    """The form's restyle and sound fields as config fields: an empty path is none, a count a
    whole number; the rest as given, for the config to check (a flow weight without a video
    is its one clear line, not dropped)."""
    paths, counts = ("init_video", "soundtrack"), ("video_frames", "video_stride", "flow_long_term")
    return {
        key: (value or None) if key in paths else int(value or 0) if key in counts else value
        for key, value in form.items()
        if value is not None
    }


# The image fields a form shows, in order: the start image (a path; "" for none), how strongly
# it holds (also each restyled frame), the diffusion steps it skips, an image prompt and its
# weight, a target image.
IMAGE_FIELDS = ("init_image", "init_weight", "skip_timesteps", "image_prompt",
                "image_prompt_weight", "target_image")  # fmt: skip


def image_settings(**form: Any) -> dict[str, Any]:
    """The form's image fields as config fields: an empty path is none; the image prompt as
    ``path:weight``, as the CLI's ``--image_prompts`` takes it."""
    settings: dict[str, Any] = {}
    if form.get("init_image"):
        settings["init_image"] = form["init_image"]
    if form.get("init_weight") is not None:
        settings["init_weight"] = form["init_weight"]
    if form.get("skip_timesteps") is not None:
        settings["skip_timesteps"] = int(form["skip_timesteps"])
    if form.get("image_prompt"):
        weight = form.get("image_prompt_weight")
        settings["image_prompts"] = f"{form['image_prompt']}:{1.0 if weight is None else weight}"
    if form.get("target_image"):
        settings["target_images"] = form["target_image"]
    return settings
