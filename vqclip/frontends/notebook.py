"""Notebook helpers: the few calls each cell of ``notebooks/vqgan_clip.ipynb`` makes.

Works in Colab and local Jupyter; ipywidgets and IPython are imported only when used.
"""

from __future__ import annotations

import contextlib
import html
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqclip.core.config import GenerationConfig
from vqclip.frontends.forms import (
    animation_settings,
    choose_models,
    preset_settings,
    prompt_settings,
    resolve,
)  # fmt: skip

if TYPE_CHECKING:  # the pipeline (torch, the models) is imported when a run starts
    from vqclip.run.driver import Progress

__all__ = [
    "in_colab",
    "one_line_errors",
    "describe_device",
    "choose_models",
    "preset_settings",
    "resolve",
    "fetch_models",
    "run_with_preview",
    "preview_motion",
    "animation_settings",
    "resume_with_preview",
    "show_video",
    "prompt_settings",
]


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Show a mistake in the form (a bad field, a missing file, a failed download) as one line
    that names it, instead of a traceback; the cells after it then skip their work."""
    from vqclip.core.errors import USER_ERRORS

    try:
        yield
    except USER_ERRORS as error:
        from IPython.display import HTML, display

        display(HTML(f'<b style="color:#b00">error:</b> {html.escape(str(error))}'))


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


def fetch_models(
    vqgan: str, clip_model: str, diffusion_model: str = "shapes-diffusion", generator: str = "vqgan"
) -> list[Path]:
    """Download (or find in the cache) the CLIPs and what the generator needs (the VQGAN, the
    diffusion model); returns their local files."""
    from vqclip.core import presets
    from vqclip.core.config import GenerationConfig
    from vqclip.models.acquire import acquire

    config = GenerationConfig(  # a placeholder prompt: the models are what is acquired
        prompts="-", generator=generator, vqgan=vqgan, clip_model=clip_model,
        diffusion_model=diffusion_model,
    )  # fmt: skip
    files = acquire(presets.apply(config))  # with what the preset adds (a prior)
    models = [*files.clips.values(), *(files.vqgan or ())]
    return models + ([files.diffusion[0]] if files.diffusion else [])


def _png_bytes(image: Any) -> bytes:
    from PIL import Image

    from vqclip.core.images import to_uint8
    from vqclip.run.video import tile_images

    buffer = io.BytesIO()  # a batch's images side by side, as in its video
    Image.fromarray(tile_images([to_uint8(x) for x in image])).save(buffer, format="PNG")
    return buffer.getvalue()


def _preview_widgets(config: GenerationConfig) -> tuple[Any, Any, Any, Progress]:
    """The label, progress bar and image of a run's preview, shown; and the run's progress."""
    import ipywidgets as widgets
    from IPython.display import display

    from vqclip.run.driver import progress_of

    steps = progress_of(config)
    total = steps.total or 0
    # No image until the first frame: an empty PNG widget shows a broken-image icon.
    image = widgets.Image(
        format="png", width=max(256, config.width), height=max(256, config.height)
    )
    image.layout.display = "none"
    label = widgets.HTML("starting...")
    bar = widgets.IntProgress(min=0, max=max(total, 1), description="progress")
    display(widgets.VBox([label, bar, image]))
    return label, bar, image, steps


def _show(image_widget: Any, image: Any) -> None:
    image_widget.value = _png_bytes(image)
    image_widget.layout.display = None


def run_with_preview(config: GenerationConfig, resume_run: str | Path | None = None) -> Any:
    """Generate with a live preview (image, iteration, loss, progress bar) every display step.

    Interrupting the cell stops the run after the step under way and keeps what was made; with
    ``resume_run`` (a run directory) :func:`resume_with_preview` goes on with it instead, up to
    ``config.max_iterations``.
    """
    from vqclip.run.driver import generate

    if resume_run:
        return resume_with_preview(resume_run, config.max_iterations)
    label, bar, image, steps = _preview_widgets(config)
    result = generate(config, callback=_reporter(label, bar, image, steps))
    return _finish(label, result)


def resume_with_preview(run_dir: str | Path, max_iterations: int | None = None) -> Any:
    """Go on with a stopped run (its own settings and seed) up to ``max_iterations`` (None: its
    own), with the live preview. A run already complete is shown as it is, not run again, so
    that a notebook left with ``resume_run`` filled in runs through."""
    from vqclip.run.driver import read_run_config, resume
    from vqclip.run.runstate import STATE, read_state

    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    target = None if saved.init_video else max_iterations
    print(f"seed: {saved.seed} (the run's own), run directory: {run_dir.resolve()}")
    finished = any(run_dir.glob("final*.png"))
    if finished and (saved.init_video or (target or saved.max_iterations) <= read_state(run_dir / STATE)["iteration"]):  # fmt: skip
        return _complete(run_dir, saved)
    config = saved.replace(max_iterations=target) if target else saved
    label, bar, image, steps = _preview_widgets(config)
    result = resume(run_dir, target, callback=_reporter(label, bar, image, steps))
    return _finish(label, result)


def _complete(run_dir: Path, config: GenerationConfig) -> Any:
    """A complete run, shown and returned as :func:`~vqclip.run.driver.generate` returns it."""
    import torch

    from vqclip.core.images import load_image
    from vqclip.run.driver import RunResult
    from vqclip.run.frames import frame_paths

    finals = tuple(sorted(run_dir.glob("final*.png")))
    image = torch.cat([load_image(path) for path in finals])
    label, _, widget, _ = _preview_widgets(config)
    _show(widget, image)
    label.value = f"complete: seed {config.seed}, run directory {run_dir.resolve()}"
    return RunResult(run_dir, image, config, tuple(frame_paths(run_dir)), False, finals)


def _reporter(label: Any, bar: Any, image: Any, steps: Progress) -> Any:
    def preview(info: dict) -> None:
        bar.value = min(steps.done(info), bar.max)
        if "image" in info:
            _show(image, info["image"])
            frame = f"frame {info['frame']}, " if "frame" in info else ""
            label.value = f"{frame}iteration {info['iteration']}, loss {float(info['loss']):.4f}"

    return preview


def _finish(label: Any, result: Any) -> Any:
    where = f"seed {result.config.seed}, run directory {result.run_dir.resolve()}"
    label.value = (
        f"stopped (to go on, set resume_run to {str(result.run_dir.resolve())!r} and run this "
        f"cell again): {where}"
        if result.interrupted
        else f"done: {where}"
    )
    return result


def preview_motion(config: GenerationConfig) -> Any:
    """An animation's camera path alone, in seconds (no model is loaded): each frame's values
    printed, the moved init image (or a calibration card) as frames of a new run directory,
    which the video cell assembles."""
    from types import SimpleNamespace

    from vqclip.run.motion import describe
    from vqclip.run.motion import preview_motion as preview

    def report(frame: int, values: dict[str, float]) -> None:
        print(describe(frame, values))

    run_dir, frames = preview(config, report)
    print(f"motion preview: {len(frames)} frames in {run_dir.resolve()}")
    return SimpleNamespace(run_dir=run_dir, config=config, frames=tuple(frames))


def show_video(run_dir: Path, fps: float | None = None, gif: bool = False, **options: Any) -> Path:
    """Assemble the run's frames into ``RUN_DIR/video.mp4`` (made again from the frames each
    time), show it inline with the final image as its poster, and offer it for download in
    Colab; with ``gif``, ``RUN_DIR/video.gif`` too (silent, within its size budget), shown and
    offered alike. ``fps`` and ``options`` (length, first, last, image, interpolate; None for the
    default) as :func:`vqclip.run.video.assemble_video` takes them. With neither ``fps`` nor
    ``length``, a run's frames last long enough to watch (:func:`~vqclip.run.video.watchable_length`;
    a restyled video keeps its own rate)."""
    import base64

    from IPython.display import HTML, display

    from vqclip.run.driver import read_run_config
    from vqclip.run.video import assemble_video, watchable_length

    run_dir = Path(run_dir).resolve()
    given = {name: value for name, value in options.items() if value is not None}
    config = read_run_config(run_dir)
    if fps is None and "length" not in given and not config.init_video and config.animation_mode == "none":  # fmt: skip
        given["length"] = watchable_length(run_dir)
    path = assemble_video(run_dir, fps, run_dir / "video.mp4", overwrite=True, **given)
    video = base64.b64encode(path.read_bytes()).decode()
    finals = sorted(run_dir.glob("final*.png"))
    poster = f' poster="data:image/png;base64,{base64.b64encode(finals[0].read_bytes()).decode()}"' if finals else ""  # fmt: skip
    display(
        HTML(
            f'<video controls width="{min(512, 4 * 128)}"{poster} '
            f'src="data:video/mp4;base64,{video}"></video>'
        )
    )
    made = [path]
    if gif:
        silent = {k: v for k, v in given.items() if k not in ("soundtrack", "soundtrack_offset")}
        made.append(assemble_video(run_dir, fps, run_dir / "video.gif", overwrite=True, **silent))
        data = base64.b64encode(made[-1].read_bytes()).decode()
        display(HTML(f'<img width="{min(512, 4 * 128)}" src="data:image/gif;base64,{data}">'))
    if in_colab():
        from google.colab import files  # type: ignore[import-not-found]

        for made_path in made:
            files.download(str(made_path))
    return path
