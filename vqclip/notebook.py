"""Notebook helpers: the few calls each cell of ``notebooks/vqgan_clip.ipynb`` makes.

Works in Colab and local Jupyter; ipywidgets and IPython are imported only when used.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from vqclip.config import GenerationConfig

__all__ = [
    "in_colab",
    "describe_device",
    "choose_models",
    "preset_settings",
    "resolve",
    "fetch_models",
    "run_with_preview",
    "show_video",
    "prompt_settings",
]


def in_colab() -> bool:
    """Whether this kernel runs in Google Colab."""
    return "google.colab" in sys.modules


def describe_device() -> str:
    """A line naming the accelerator (or CPU) that generation will use."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB"
    return (
        f"CPU: no GPU found; {torch.get_num_threads()} threads (the shapes models run in seconds)"
    )


def choose_models(vqgan: str = "auto", clip_model: str = "auto") -> tuple[str, str]:
    """Resolve "auto": imagenet_f16_16384 with ViT-B/32 on a GPU, the shapes world on a CPU."""
    import torch

    gpu = torch.cuda.is_available()
    if vqgan == "auto":
        vqgan = "imagenet_f16_16384" if gpu else "shapes-vqgan"
    if clip_model == "auto":
        clip_model = "ViT-B/32" if gpu else "shapes-clip"
    return vqgan, clip_model


def preset_settings(**form: Any) -> dict[str, Any]:
    """The form's settings, its "auto" values (0, or "auto") left to the model's preset
    (:mod:`vqclip.presets`): the shapes world's measured settings for its models, the classic
    ones for the others, as the CLI and the Python API take them."""
    return {key: None if value in (0, "auto") else value for key, value in form.items()}


def resolve(config: GenerationConfig) -> GenerationConfig:
    """The form's config with its seed picked and its preset applied, as the run will record it
    (so that the cell can print the seed and size the preview)."""
    from vqclip import presets
    from vqclip.config import resolve_seed

    return presets.apply(resolve_seed(config))


def prompt_settings(prompts: str, batch_prompts: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The config's prompt fields from the form: ``batch_prompts``, when given, replace
    ``prompts`` (one entry per image of the batch)."""
    if batch_prompts:
        return {"prompts": "", "batch_prompts": tuple(batch_prompts)}
    return {"prompts": prompts, "batch_prompts": ()}


def fetch_models(vqgan: str, clip_model: str) -> list[Path]:
    """Download (or find in the cache) both models; returns their local files."""
    from vqclip import zoo

    return [*zoo.resolve_vqgan(vqgan), zoo.resolve_clip(clip_model)]


def _png_bytes(image: Any) -> bytes:
    from PIL import Image

    from vqclip.images import to_uint8
    from vqclip.video import tile_images

    buffer = io.BytesIO()  # a batch's images side by side, as in its video
    Image.fromarray(tile_images([to_uint8(x) for x in image])).save(buffer, format="PNG")
    return buffer.getvalue()


def run_with_preview(config: GenerationConfig, resume_run: str | Path | None = None) -> Any:
    """Generate with a live preview (image, iteration, loss, progress bar) every display step.

    Interrupting the cell stops the run after the step under way and keeps what was made; with
    ``resume_run`` (a run directory) the run goes on from where it stopped, up to
    ``config.max_iterations``, with its own saved settings.
    """
    import ipywidgets as widgets
    from IPython.display import display

    from vqclip.pipeline import generate, read_run_config, resume
    from vqclip.restyle import frames_to_restyle

    if resume_run:  # the run's own settings; the form's max_iterations extends a plain run
        saved = read_run_config(Path(resume_run))
        more = None if saved.init_video else config.max_iterations
        config = saved.replace(max_iterations=more) if more else saved
    per_frame = config.max_iterations if config.max_iterations > 0 else 0
    frames = frames_to_restyle(config)
    total = per_frame * frames
    image = widgets.Image(
        format="png", width=max(256, config.width), height=max(256, config.height)
    )
    label = widgets.HTML("starting...")
    bar = widgets.IntProgress(min=0, max=max(total, 1), description="progress")
    display(widgets.VBox([label, bar, image]))

    def preview(info: dict) -> None:
        bar.value = min(info.get("frame", 0) * per_frame + info["iteration"] + 1, bar.max)
        if "image" in info:
            image.value = _png_bytes(info["image"])
            frame = f"frame {info['frame']}, " if "frame" in info else ""
            label.value = f"{frame}iteration {info['iteration']}, loss {float(info['loss']):.4f}"

    if resume_run:
        result = resume(resume_run, more, callback=preview)
    else:
        result = generate(config, callback=preview)
    label.value = (
        f"stopped (to go on, set resume_run to {str(result.run_dir)!r} and run this cell "
        f"again): seed {result.config.seed}, run directory {result.run_dir}"
        if result.interrupted
        else f"done: seed {result.config.seed}, run directory {result.run_dir}"
    )
    return result


def show_video(run_dir: Path, fps: float | None = None, **options: Any) -> Path:
    """Assemble the run's frames into ``RUN_DIR/video.mp4`` (made again from the frames each
    time), show it inline, and offer it for download in Colab; ``fps`` and ``options`` (length,
    first, last, image, interpolate; None for the default) as
    :func:`vqclip.video.assemble_video` takes them."""
    from IPython.display import Video, display

    from vqclip.video import assemble_video

    given = {name: value for name, value in options.items() if value is not None}
    path = assemble_video(run_dir, fps, Path(run_dir) / "video.mp4", overwrite=True, **given)
    display(Video(str(path), embed=True, width=min(512, 4 * 128)))
    if in_colab():
        from google.colab import files  # type: ignore[import-not-found]

        files.download(str(path))
    return path
