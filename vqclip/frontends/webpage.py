"""``vqclip ui``: a local web page (gradio, on 127.0.0.1) over the same library as the CLI.

Prompt and settings as the notebook's form reads them (:mod:`vqclip.frontends.forms`), a live preview
with a progress bar, stop and resume, and a gallery of the runs in ``output_dir`` with each
one's config, replay and video. Runs go through :mod:`vqclip.run.driver`; this module only
lays the page out and moves reports from the run's thread to the page.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from vqclip.core import plugins
from vqclip.core.config import (
    COHERENCES,
    PADDINGS,
    SAMPLINGS,
    STARTS,
    SYMMETRIES,
    GenerationConfig,
)  # fmt: skip
from vqclip.core.errors import USER_ERRORS
from vqclip.core.files import write_atomic
from vqclip.core.images import to_uint8
from vqclip.core.limits import check_regular
from vqclip.core.presets import preset_for
from vqclip.core.prompts import REGIONS, is_keyed, parse_prompts, split_keyed, split_phases
from vqclip.frontends.forms import (
    ANIMATION_FIELDS,
    COMPOSITION_FIELDS,
    IMAGE_FIELDS,
    SCHEDULE_HELP,
    VIDEO_FIELDS,
    animation_settings,
    choose_models,
    composition_settings,
    image_settings,
    preset_settings,
    resolve,
    video_settings,
)  # fmt: skip
from vqclip.models import registry
from vqclip.models.depth import depth_models
from vqclip.models.flow import FLOW_ESTIMATORS
from vqclip.run.driver import Progress, RunResult, generate, progress_of, read_run_config, resume
from vqclip.run.frames import list_runs, run_picture
from vqclip.run.motion import preview_motion
from vqclip.run.video import (
    FORMATS,
    IMAGE_SUFFIXES,
    INTERPOLATIONS,
    assemble_video,
    tile_images,
    watchable_length,
)  # fmt: skip

__all__ = ["build_ui", "serve"]

log = logging.getLogger(__name__)

SYNTAX = """\
**Prompts**: `text:weight:stop | text:weight | text`. A weight may be negative (push away:
`blurry:-0.5`); a stop ends that prompt's pull once its distance is below it; `a ^ b` is a story
of two phases. Fields left at 0 or `auto` take the model's preset.
"""


@dataclass
class Run:
    """The run under way: its stop flag, and the reports its thread leaves for the page."""

    stop: threading.Event = field(default_factory=threading.Event)
    reports: queue.Queue = field(default_factory=queue.Queue)
    result: RunResult | None = None
    error: str | None = None
    thread: threading.Thread | None = None


def form_config(
    prompts: str,
    generator: str,
    vqgan: str,
    clip_model: str,
    seed: float,
    *fields: Any,
    keep: Callable[[str | None, str], str | None] | None = None,
) -> GenerationConfig:
    """The form's config, resolved (seed picked, preset applied) as the run will record it;
    ``fields`` are width, height, max_iterations, cutn and display_frequency (0: preset), then
    the animation's (``ANIMATION_FIELDS``; none: a still), the composition's
    (``COMPOSITION_FIELDS``), the restyle's and sound's (``VIDEO_FIELDS``) and the images'
    (``IMAGE_FIELDS``). ``keep(path, field)``: where an uploaded file is kept for the run."""
    numbers, animation = fields[:5], dict(zip(ANIMATION_FIELDS, fields[5:], strict=False))
    rest = fields[5 + len(ANIMATION_FIELDS) :]
    composition = dict(zip(COMPOSITION_FIELDS, rest, strict=False))
    rest = rest[len(COMPOSITION_FIELDS) :]
    video = dict(zip(VIDEO_FIELDS, rest, strict=False))
    images = dict(zip(IMAGE_FIELDS, rest[len(VIDEO_FIELDS) :], strict=False))
    for group in (video, images) if keep is not None else ():
        for name in group:  # in the form's order: the first bad one is named
            if name in UPLOADED:
                group[name] = keep(group[name], name)
    width, height, max_iterations, cutn, display_frequency = (int(n or 0) for n in numbers)
    vqgan, clip_model, diffusion_model = choose_models(vqgan, clip_model)
    _check_registry_names(vqgan, clip_model)
    form = dict(width=width, height=height, max_iterations=max_iterations, cutn=cutn)
    return resolve(
        GenerationConfig(
            prompts=prompts,
            generator=generator,
            vqgan=vqgan,
            clip_model=clip_model,
            diffusion_model=diffusion_model,
            seed=int(seed),
            display_frequency=display_frequency or 10,
            **preset_settings(**form),
            **animation_settings(**animation),
            **composition_settings(**composition),
            **video_settings(**video),
            **image_settings(**images),
        )  # fmt: skip
    )


def _check_registry_names(vqgan: str, clip_model: str) -> None:
    """The page takes models by registry name only: a path typed into it would tell a visitor
    whether that file exists (the errors differ), and the page is no file browser."""
    from vqclip.core.config import parse_clip_models

    wanted = [("vqgan", vqgan)] + [("clip_model", name) for name, _ in parse_clip_models(clip_model)]  # fmt: skip
    for setting, name in wanted:
        known = registry.model_names("vqgan" if setting == "vqgan" else "clip")
        if name not in known:
            raise ValueError(
                f"{setting}: {name[:80]!r} is not a registry model; the page takes the names that "
                "`vqclip models` lists (give a file's path with the CLI)"
            )


def describe_preset(generator: str, vqgan: str, clip_model: str) -> str:
    """A line naming the preset these choices take, and its settings."""
    vqgan, clip_model, diffusion_model = choose_models(vqgan, clip_model)
    models = GenerationConfig(prompts="-", generator=generator, vqgan=vqgan, clip_model=clip_model, diffusion_model=diffusion_model)  # fmt: skip
    preset = preset_for(models)  # a preset matches on the generator and models, not prompts
    settings = ", ".join(f"{k} {v}" for k, v in preset.settings.items())
    return f"preset **{preset.name}** (for {vqgan} + {clip_model}): {settings}"


def run_in_thread(work: Callable[[Callable], RunResult]) -> Run:
    """Start ``work(callback)`` in a thread; its reports and result arrive on the returned
    :class:`Run`, and setting ``run.stop`` ends it after the step under way, keeping it."""
    run = Run()

    def callback(info: dict) -> None:
        if "image" in info:  # the loss is read only at display steps, as the CLI reads it
            image = tile_images([to_uint8(x) for x in info["image"]])
            run.reports.put((info.get("frame", 0), info["iteration"], float(info["loss"]), image))
        else:
            run.reports.put((info.get("frame", 0), info["iteration"], None, None))
        if run.stop.is_set():
            raise KeyboardInterrupt  # the driver keeps everything and marks the run stopped

    def target() -> None:
        try:
            run.result = work(callback)
        except USER_ERRORS as error:
            run.error = str(error)
        except Exception as error:  # a bug, not the user's: its traceback goes to the log
            log.exception("the run failed")
            run.error = f"the run failed: {type(error).__name__}: {error} (traceback in the log)"
        finally:
            run.reports.put(None)

    run.thread = threading.Thread(target=target, daemon=True)
    run.thread.start()
    return run


# Outline colours of the regions drawn over the preview, in the order the prompts name them.
OUTLINES = ((255, 220, 0), (0, 230, 255), (255, 60, 200), (120, 255, 60))


def named_regions(prompts: str) -> list[str]:
    """The named regions (``@left``, ...) the prompts use, in order, each once; a mask image's
    is drawn by no one (the page reads no file a prompt names)."""
    try:
        phases = [text for _, text in split_keyed(prompts)] if is_keyed(prompts) else split_phases(prompts)  # fmt: skip
        names = [p.region.lower() for phase in phases for p in parse_prompts(phase) if p.region]
    except ValueError:  # the run refuses the prompts in one line: nothing to draw here
        return []
    return list(dict.fromkeys(name for name in names if name in REGIONS))


def outline_regions(image: np.ndarray, regions: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 with each region's box outlined (2 pixels, or 1 in a small image) in
    its colour: where its prompts are scored; the saved frames are untouched."""
    image = image.copy()
    height, width = image.shape[:2]
    line = 1 if min(height, width) < 64 else 2
    for index, name in enumerate(regions):
        left, top, right, bottom = REGIONS[name]
        x0, y0 = min(int(left * width), width - line), min(int(top * height), height - line)
        x1, y1 = max(int(round(right * width)), x0 + line), max(int(round(bottom * height)), y0 + line)  # fmt: skip
        colour = OUTLINES[index % len(OUTLINES)]
        for box in ((y0, y0 + line, x0, x1), (y1 - line, y1, x0, x1), (y0, y1, x0, x0 + line), (y0, y1, x1 - line, x1)):  # fmt: skip
            image[box[0] : box[1], box[2] : box[3]] = colour
    return image


def region_canvas(prompts: str, width: float, height: float) -> Any:
    """Before a run: the prompts' regions outlined on a grey canvas of the form's size (or a
    square, with the preset's), so that a user sees where each prompt will apply."""
    regions = named_regions(prompts)
    if not regions:
        return gr.skip()
    width, height = int(width or 0) or 256, int(height or 0) or int(width or 0) or 256
    scale = 256 / max(width, height)  # drawn at most 256 pixels a side
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    return outline_regions(np.full((*size, 3), 96, np.uint8), regions)


def follow(run: Run, steps: Progress) -> Iterator[tuple[np.ndarray | None, str]]:
    """The page's view of ``run`` as it goes: (the latest frame or None, a status line with a
    progress bar over the run's ``steps``), until the run ends."""
    image, loss = None, None
    while (report := run.reports.get()) is not None:
        frame, iteration, new_loss, new_image = report
        image = new_image if new_image is not None else image
        loss = new_loss if new_loss is not None else loss
        done = steps.done({"frame": frame, "iteration": iteration})
        yield image, _progress(done, steps.total, loss)
    if run.result is not None:  # the final image: each one's best candidate
        image = tile_images([to_uint8(x) for x in run.result.image])
    yield image, _outcome(run)


def _progress(done: int, total: int | None, loss: float | None) -> str:
    shown = f", loss {loss:.4f}" if loss is not None else ""
    if total is None:  # a run until stopped
        return f"<progress></progress> step {done}{shown}"
    return f'<progress value="{done}" max="{max(total, done)}"></progress> step {done} of {total}{shown}'  # fmt: skip


def _outcome(run: Run) -> str:
    if run.error is not None:
        return f'<b class="vqclip-error">error:</b> {html.escape(run.error)}'
    result = run.result
    where = f"seed {result.config.seed}, run directory {html.escape(str(result.run_dir.resolve()))}"
    if result.interrupted:
        return f"stopped (Resume goes on): {where}"
    return f"done: {where}"


# What a run that cannot be read shows in the gallery: a grey tile, its caption says why.
_UNREADABLE = np.full((64, 64, 3), 96, dtype=np.uint8)


def gallery_items(output_dir: str | Path) -> list[tuple[str | np.ndarray, str]]:
    """(picture, caption) for each run in ``output_dir`` that has one, newest first; a run
    that cannot be read (a stray frame name, a frames link) shows as such, the others as ever.
    Each caption ends with `` · RUN_NAME``, which is how a click names its run."""
    items: list[tuple[str | np.ndarray, str]] = []
    for run_dir in list_runs(output_dir):
        try:
            picture = run_picture(run_dir)
        except USER_ERRORS as error:
            items.append((_UNREADABLE, f"unreadable: {str(error)[:120]} · {run_dir.name}"))
            continue
        if picture is not None:
            items.append((str(picture), _caption(run_dir)))
    return items


def _caption(run_dir: Path) -> str:
    try:
        config = read_run_config(run_dir)
    except USER_ERRORS:
        return f"unreadable config.json · {run_dir.name}"
    prompts = config.prompts or " / ".join(config.batch_prompts)
    return f"{prompts} · seed {config.seed} · {run_dir.name}"


def run_named(output_dir: str | Path, name: str | None) -> Path:
    """The run directory ``name`` in ``output_dir``: a plain name of a run there (not a link,
    not a path), or ``ValueError``."""
    runs = {run.name: run for run in list_runs(output_dir)}  # no links, each with config.json
    if not name or name not in runs:
        raise ValueError(f"run {str(name)[:80]!r} is not a run in {output_dir}; choose one in the gallery")  # fmt: skip
    return runs[name]


def make_video(
    run_dir: str | Path,
    fmt: str = "mp4",
    interpolate: float = 0,
    interpolation: str = "minterpolate",
    ping_pong: bool = False,
) -> tuple[Path, bool]:
    """The run's video as ``fmt`` (mp4, webm or gif), long enough to watch, ``interpolate``
    frames a second by ``interpolation`` (0: as made) and forward then back with
    ``ping_pong``: made from its frames, or the one it has (each choice its own file, named by
    it; the page never overwrites: delete it to make it again); and whether it was made now."""
    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise ValueError(f"format: {str(fmt)[:20]!r}; expected one of {', '.join(FORMATS)}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: {str(interpolation)[:20]!r}; expected one of {', '.join(INTERPOLATIONS)}")  # fmt: skip
    interpolate = float(interpolate or 0)
    smoother = f"-{interpolation}{interpolate:g}fps" if interpolate else ""
    video = run_dir / f"video{smoother}{'-loop' if ping_pong else ''}.{fmt}"
    if video.is_file() and not video.is_symlink():
        return video, False
    length = None if read_run_config(run_dir).init_video else watchable_length(run_dir)
    return assemble_video(
        run_dir, None, video, length=length, interpolate=interpolate or None,
        interpolation=interpolation, ping_pong=bool(ping_pong),
    ), True  # fmt: skip


UPLOADS = "uploads"  # OUTPUT_DIR/uploads: the videos, sounds and images given to the page, kept
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".m4v", ".avi", ".gif")
SOUND_SUFFIXES = (".wav", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac")
MAX_UPLOAD = 32 << 20  # bytes a request may upload: a short clip to restyle (a minute of 720p)
UPLOAD_HEIGHT = 140  # pixels of an upload box: the form stays one screen per section
# The form's fields that take an upload, and the files each takes.
UPLOADED = {
    "init_video": VIDEO_SUFFIXES,
    "soundtrack": SOUND_SUFFIXES + VIDEO_SUFFIXES,  # a sound, or a video's sound
    "init_image": IMAGE_SUFFIXES,
    "image_prompt": IMAGE_SUFFIXES,
    "target_image": IMAGE_SUFFIXES,
}


def keep_upload(output_dir: str | Path, path: str | None, field: str) -> str | None:
    """A copy of the uploaded file at ``path`` in ``OUTPUT_DIR/uploads``, named by its
    content's hash: gradio removes its own copy within the hour and when the page stops, while
    the run's config must name a file that stays (Resume, Replay and Video read it again); the
    same upload twice is one file. ``field``: which of the form's (``UPLOADED``) it is for."""
    if not path:
        return None
    source = Path(path)
    allowed = UPLOADED[field]
    if source.suffix.lower() not in allowed:
        raise ValueError(f"{field}: {source.name[:80]!r} is not a file the page takes; expected {', '.join(allowed)}")  # fmt: skip
    check_regular(source, field)  # no FIFO, device or folder
    if source.stat().st_size > MAX_UPLOAD:
        raise ValueError(f"{field}: {source.name[:80]!r} is over {MAX_UPLOAD >> 20} MB")
    folder = Path(output_dir) / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir():  # its writes would land where it points
        raise ValueError(f"{field}: {folder} is a link or not a folder; expected the page's own folder for uploads")  # fmt: skip
    data = source.read_bytes()
    kept = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{source.suffix.lower()}"
    same = kept.is_file() and not kept.is_symlink() and kept.stat().st_size == len(data)
    if not (same and kept.read_bytes() == data):
        write_atomic(kept, data)  # a link or another file planted at its name is replaced
    return str(kept)


def _settings_text(values: dict[str, Any]) -> str:
    """A run's config as JSON, the fields at their defaults left out: what was chosen (and
    what its preset filled in) fits the view, where all of config.json's would not."""
    defaults = {f.name: f.default for f in dataclasses.fields(GenerationConfig)}
    chosen = {k: v for k, v in values.items() if k not in defaults or _plain(defaults[k]) != v}
    return json.dumps(chosen, indent=1)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class _Page:
    """The handlers behind the page's buttons, over one ``output_dir`` and one run at a time."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.run: Run | None = None

    def keep(self, path: str | None, field: str) -> str | None:
        """An upload kept beside the runs, which read it again (:func:`keep_upload`)."""
        return keep_upload(self.output_dir, path, field)

    def start(self, *form: Any) -> Iterator[tuple]:
        try:
            config = form_config(*form, keep=self.keep).replace(output_dir=str(self.output_dir))
        except USER_ERRORS as error:
            yield None, _error(error), None
            return
        yield from self._drive(lambda cb: generate(config, callback=cb), progress_of(config), config.prompts)  # fmt: skip

    def resume(self, name: str | None) -> Iterator[tuple]:
        try:
            run_dir = run_named(self.output_dir, name)
            config = read_run_config(run_dir)
        except USER_ERRORS as error:
            yield None, _error(error), name
            return
        yield from self._drive(lambda cb: resume(run_dir, callback=cb), progress_of(config), config.prompts)  # fmt: skip

    def replay(self, name: str | None) -> Iterator[tuple]:
        """A new run with a chosen run's whole config: the same image, bit for bit on a CPU."""
        try:
            config = read_run_config(run_named(self.output_dir, name)).replace(
                output_dir=str(self.output_dir), run_name=None
            )
        except USER_ERRORS as error:
            yield None, _error(error), name
            return
        yield from self._drive(lambda cb: generate(config, callback=cb), progress_of(config), config.prompts)  # fmt: skip

    def _drive(
        self, work: Callable[[Callable], RunResult], steps: Progress, prompts: str = ""
    ) -> Iterator[tuple]:
        if self.run is not None and self.run.thread.is_alive():
            yield gr.skip(), "a run is under way: stop it first", gr.skip()
            return
        self.run = run = run_in_thread(work)
        regions = named_regions(prompts)
        for image, status in follow(run, steps):
            chosen = run.result.run_dir.name if run.result is not None else gr.skip()
            if image is not None and regions:  # where each region's prompts are scored
                image = outline_regions(image, regions)
            yield (image if image is not None else gr.skip()), status, chosen

    def preview_motion(self, *form: Any) -> tuple[Any, str]:
        """The camera path alone (no model), as a video: seconds, to tune a path."""
        try:
            config = form_config(*form, keep=self.keep).replace(output_dir=str(self.output_dir))
            run_dir, frames = preview_motion(config)
            path, _ = make_video(run_dir)
        except USER_ERRORS as error:
            return None, _error(error)
        return str(path), f"motion preview: {len(frames)} frames in {html.escape(run_dir.name)}"

    def stop(self) -> str:
        if self.run is None or not self.run.thread.is_alive():
            return "no run under way"
        self.run.stop.set()
        return "stopping after the step under way..."

    def choose(self, event: gr.SelectData) -> tuple[str | None, str]:
        """The clicked run, by the name its caption ends with (never by its place in a list
        that may have changed since the page drew it), and its settings."""
        caption = event.value.get("caption") if isinstance(event.value, dict) else None
        name = str(caption or "").rpartition(" · ")[2]
        try:
            return name, _settings_text(read_run_config(run_named(self.output_dir, name)).to_dict())
        except USER_ERRORS as error:
            return None, f"// {error}"

    def video(self, name: str | None, fmt: str = "mp4", *choices: Any) -> tuple[Any, Any, str]:
        """The run's video in the player (a GIF, which a player cannot play, only to
        download), and to download; ``choices``: :func:`make_video`'s after the format."""
        try:
            path, made = make_video(run_named(self.output_dir, name), fmt, *choices)
        except USER_ERRORS as error:
            return None, None, _error(error)
        note = "made" if made else "made before (delete it to make it again)"
        playable = str(path) if path.suffix != ".gif" else None
        return playable, str(path), f"video, {note}: {html.escape(str(path))}"


def _upload(field: str, label: str) -> gr.File:
    """An upload box for the form's ``field``, taking the files it takes (``UPLOADED``)."""
    return gr.File(label=label, file_types=list(UPLOADED[field]), type="filepath", height=UPLOAD_HEIGHT, elem_id=field)  # fmt: skip


def _plugin_help(syntax: str, kinds: dict) -> str:
    installed = ", ".join(sorted(kinds)) or "none installed"
    return f'"{syntax}" (docs/plugins.md); installed: {installed}'


def _error(error: BaseException) -> str:
    return f'<b class="vqclip-error">error:</b> {html.escape(str(error))}'


def build_ui(output_dir: str | Path = "outputs") -> gr.Blocks:
    """The page: a form, the live run, and the gallery of ``output_dir``'s runs."""
    page = _Page(output_dir)
    vqgans, clips = (
        ["auto", *registry.model_names("vqgan")],
        ["auto", *registry.model_names("clip")],
    )
    with gr.Blocks(title="vqclip", analytics_enabled=False, delete_cache=(600, 3600)) as ui:
        gr.Markdown("# vqclip\n" + SYNTAX)
        chosen = gr.State(None)  # the name of the run that Resume, Replay and Video act on
        with gr.Row():
            with gr.Column():
                prompts = gr.Textbox("a red circle on a blue background", label="prompts", elem_id="prompts")  # fmt: skip
                with gr.Row():
                    generator = gr.Dropdown(
                        ["vqgan", "pixels", "diffusion"], value="vqgan", label="generator"
                    )
                    vqgan = gr.Dropdown(vqgans, value="auto", label="VQGAN")
                    clip_model = gr.Dropdown(clips, value="auto", label="CLIP (several: A + B:0.5)", allow_custom_value=True)  # fmt: skip
                preset = gr.Markdown(describe_preset("vqgan", "auto", "auto"), elem_id="preset")
                with gr.Row():
                    seed = gr.Number(-1, label="seed (-1: pick one)", precision=0, elem_id="seed")
                    steps = gr.Number(0, label="max_iterations", precision=0, elem_id="steps")
                    every = gr.Number(10, label="display_frequency", precision=0)
                with gr.Row():
                    width = gr.Number(0, label="width", precision=0)
                    height = gr.Number(0, label="height", precision=0)
                    cutn = gr.Number(0, label="cutn", precision=0)
                with gr.Accordion("animation (docs/animation.md)", open=False):
                    animation = [
                        gr.Dropdown(
                            ["none", "2D", "3D"],
                            value="none",
                            label="animation_mode",
                            elem_id="animation_mode",
                        ),  # fmt: skip
                        gr.Number(0, label="max_frames", precision=0, elem_id="max_frames"),
                        gr.Number(
                            0, label="first_frame_steps (0: steps_per_frame)", precision=0
                        ),  # fmt: skip
                        gr.Number(10, label="steps_per_frame", precision=0),
                        *(
                            gr.Textbox(
                                default,
                                label=name,
                                info=SCHEDULE_HELP if name == "zoom" else None,
                                elem_id=name,
                            )  # fmt: skip
                            for name, default in (
                                ("zoom", "1.0"),
                                ("angle", "0"),
                                ("translation_x", "0"),
                                ("translation_y", "0"),
                                ("translation_z", "0"),
                                ("rotation_3d_x", "0"),
                                ("rotation_3d_y", "0"),
                                ("rotation_3d_z", "0"),
                                ("fov", "40"),
                            )
                        ),  # fmt: skip
                        gr.Dropdown(
                            ["none", *depth_models(), *plugins.estimators("depth")],
                            value="none",
                            label="depth_model",
                        ),  # fmt: skip
                        gr.Textbox(
                            "0.6",
                            label="frame_strength (diffusion: the share each frame keeps)",
                            elem_id="frame_strength",
                        ),  # fmt: skip
                        gr.Number(
                            1, label="cadence (optimise or sample every Nth frame)", precision=0
                        ),  # fmt: skip
                        gr.Number(
                            0, label="prompt_blend (frames a keyed prompt blends over)", precision=0
                        ),  # fmt: skip
                        gr.Dropdown(
                            list(COHERENCES),
                            value="none",
                            label="color_coherence (frames keep frame 0's colours)",
                        ),  # fmt: skip
                        gr.Number(0.0, label="fps (0: 12)"),
                        gr.Dropdown(
                            list(PADDINGS),
                            value="reflection",
                            label="padding_mode (what fills the edges)",
                        ),  # fmt: skip
                        gr.Dropdown(list(SAMPLINGS), value="bilinear", label="sampling_mode"),
                        gr.Checkbox(False, label="save_depth (3D: each frame's depth image)"),
                        gr.Textbox(
                            "0",
                            label="frame_noise (grain added to each moved frame)",
                            elem_id="frame_noise",
                        ),  # fmt: skip
                        gr.Textbox(
                            "1.0",
                            label="frame_contrast (each moved frame's contrast)",
                            elem_id="frame_contrast",
                        ),  # fmt: skip
                    ]
                    motion = gr.Button("Preview motion", elem_id="preview-motion")
                with gr.Accordion("composition", open=False):
                    composition = [
                        gr.Dropdown(
                            list(SYMMETRIES),
                            value="none",
                            label="symmetry",
                        ),  # fmt: skip
                        gr.Checkbox(False, label="tile (a seamless texture)"),
                        gr.Textbox(
                            "", label="palette", info='colours by name or hex: "red, #1e3cdc"'
                        ),  # fmt: skip
                        gr.Number(1.0, label="palette_weight"),
                        gr.Number(0.0, label="saturation_weight"),
                        gr.Number(0.0, label="contrast_weight"),
                        gr.Number(1.0, label="symmetry_share (of the steps, from the first)"),
                        gr.Textbox(
                            "",
                            label="symmetry_at (diffusion: shares of the steps, once each)",
                            info="Disco's transformation_percent, such as 0.09",
                        ),  # fmt: skip
                    ]
                with gr.Accordion("start, cutouts and plugins (docs/usage.md)", open=False):
                    composition += [
                        gr.Dropdown(
                            ["auto", *STARTS],
                            value="auto",
                            label="start (without an init_image)",
                            elem_id="start",
                        ),  # fmt: skip
                        gr.Textbox(
                            "",
                            label="cut_overview (Disco's: whole-image views per step)",
                            info='"[12]*400+[4]*600", in place of cutn',
                        ),  # fmt: skip
                        gr.Textbox(
                            "",
                            label="cut_innercut (random crops per step)",
                            info='"[4]*400+[12]*600"',
                        ),  # fmt: skip
                        gr.Textbox(
                            "",
                            label="cut_icgray_p (the share of crops in grey)",
                            info='"[0.2]*400+[0]*600"',
                        ),  # fmt: skip
                        gr.Number(1.0, label="cut_ic_pow (> 1: smaller crops)"),
                        gr.Textbox(
                            "",
                            label="terms (plugins' objective terms)",
                            info=_plugin_help("NAME:WEIGHT, ...", plugins.term_kinds()),
                        ),  # fmt: skip
                        gr.Textbox(
                            "",
                            label="transforms (plugins' image transforms)",
                            info=_plugin_help("NAME, NAME:ARG", plugins.transform_kinds()),
                        ),  # fmt: skip
                    ]
                with gr.Accordion("images: a start, a prompt, a target", open=False):
                    images = [
                        _upload("init_image", "init_image: start from it"),
                        gr.Number(
                            0.0, label="init_weight (hold near it, or near each restyled frame)"
                        ),  # fmt: skip
                        gr.Number(
                            0,
                            label="skip_timesteps (diffusion: the steps the start skips)",
                            precision=0,
                        ),  # fmt: skip
                        _upload("image_prompt", "image prompt: pull toward what CLIP sees in it"),
                        gr.Number(1.0, label="image prompt's weight (negative: push away)"),
                        _upload("target_image", "target image: an image prompt of weight 1"),
                    ]
                with gr.Accordion("restyle a video (docs/video.md)", open=False):
                    restyle = [
                        _upload(
                            "init_video",
                            f"video to restyle, at most {MAX_UPLOAD >> 20} MB: each frame a run of max_iterations steps",
                        ),
                        gr.Number(
                            0, label="video_frames (0: all)", precision=0, elem_id="video_frames"
                        ),  # fmt: skip
                        gr.Number(0.0, label="video_fps (0: every video_stride-th frame)"),
                        gr.Number(1, label="video_stride", precision=0),
                        gr.Number(0.0, label="frame_init_weight (start from the previous result)"),
                        gr.Number(0.0, label="temporal_weight (pull toward it)"),
                        gr.Checkbox(
                            False,
                            label="flow_warp (the previous result moved along the optical flow)",
                            elem_id="flow_warp",
                        ),  # fmt: skip
                        gr.Number(1.0, label="flow_blend"),
                        gr.Number(
                            0.0,
                            label="flow_weight (pull toward the moved result)",
                            elem_id="flow_weight",
                        ),
                        gr.Number(
                            0,
                            label="flow_long_term (frames further back pulled toward)",
                            precision=0,
                        ),  # fmt: skip
                        gr.Dropdown(
                            [*FLOW_ESTIMATORS, *plugins.estimators("flow")],
                            value="dis",
                            label="flow_estimator",
                        ),  # fmt: skip
                        _upload(
                            "soundtrack",
                            "soundtrack under the video (a restyle keeps its own sound without one)",
                        ),
                        gr.Number(0.0, label="soundtrack_offset (seconds into it)"),
                    ]
                with gr.Row():
                    start = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", elem_id="stop")
                    go_on = gr.Button("Resume", elem_id="resume")
            with gr.Column():
                preview = gr.Image(label="preview", type="numpy", interactive=False, height=320, elem_id="preview")  # fmt: skip
                status = gr.HTML("", elem_id="status")
        gr.Markdown(f"## Runs in `{Path(output_dir).resolve()}`")
        gallery = gr.Gallery(gallery_items(output_dir), columns=6, height=240, object_fit="contain", allow_preview=False, elem_id="gallery")  # fmt: skip
        with gr.Row():
            replay = gr.Button("Replay", elem_id="replay")
            video_button = gr.Button("Video", elem_id="video-button")
            video_format = gr.Dropdown(list(FORMATS), value="mp4", label="format", elem_id="format")
            smoother = [
                gr.Number(0, label="interpolate to fps (0: off)", elem_id="interpolate"),
                gr.Dropdown(list(INTERPOLATIONS), value="flow", label="interpolation"),
                gr.Checkbox(False, label="loop (forward, then back)"),
            ]
            refresh = gr.Button("Refresh")
        with gr.Row():
            config_view = gr.Code(
                language="json",
                label="config.json: the settings not at their defaults",
                elem_id="config",
            )
            with gr.Column():
                video = gr.Video(label="video", elem_id="video", interactive=False)
                download = gr.File(label="download", elem_id="download", interactive=False)

        form = [prompts, generator, vqgan, clip_model, seed, width, height, steps, cutn, every, *animation, *composition, *restyle, *images]  # fmt: skip
        for choice in (generator, vqgan, clip_model):
            choice.change(describe_preset, [generator, vqgan, clip_model], preset)
        shown = [preview, status, chosen]
        show_runs = dict(fn=lambda: gallery_items(output_dir), outputs=gallery)
        start.click(page.start, form, shown).then(**show_runs)
        go_on.click(page.resume, chosen, shown).then(**show_runs)
        replay.click(page.replay, chosen, shown).then(**show_runs)
        stop.click(page.stop, None, status, concurrency_limit=None)
        refresh.click(**show_runs)
        ui.load(**show_runs)  # the runs as they are when the page is opened, not when served
        gallery.select(page.choose, None, [chosen, config_view])
        video_button.click(page.video, [chosen, video_format, *smoother], [video, download, status])  # fmt: skip
        motion.click(page.preview_motion, form, [video, status])
        prompts.change(region_canvas, [prompts, width, height], preview)
    return ui


def serve(output_dir: str | Path = "outputs", host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page until interrupted (Ctrl-C or SIGTERM), to its user only
    (:mod:`vqclip.frontends.webguard`): only ``output_dir``'s images and videos are served beside it,
    and uploads are bounded. What gradio caches goes to ``$GRADIO_TEMP_DIR`` (the ``vqclip ui``
    command makes it a temporary folder, removed at the end)."""
    import uvicorn
    from fastapi import FastAPI

    from vqclip.frontends.webguard import LocalOnly, page_hosts

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    # uvicorn stops on SIGTERM, then raises it again under the handler it found: this one, so
    # that the process ends through its finally blocks rather than at once.
    previous = signal.signal(signal.SIGTERM, _end)
    try:
        page = build_ui(output_dir).queue(default_concurrency_limit=1)
        app = gr.mount_gradio_app(
            FastAPI(), page, path="/", allowed_paths=[str(Path(output_dir).resolve())],
            max_file_size=MAX_UPLOAD, show_error=True, server_name=host, server_port=port,
        )  # fmt: skip
        uvicorn.run(LocalOnly(app, page_hosts(host, port)), host=host, port=port, log_level="warning")  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)


def _end(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
