"""generate(config): check inputs, load models, run the loop, save frames and the final image."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vqclip import zoo
from vqclip.config import GenerationConfig, resolve_seed
from vqclip.cutouts import make_augments
from vqclip.download import DownloadError
from vqclip.embeddings import build_targets
from vqclip.frames import (
    FrameWriter,
    check_output_dir,
    create_run_dir,
    frame_iteration,
    set_aside_from,
    write_atomic,
)
from vqclip.images import check_image, load_image, to_uint8
from vqclip.latents import encode_image, noise_image, random_latent
from vqclip.losses import Targets
from vqclip.memory import check_memory
from vqclip.models import (
    VQGAN,
    compile_for_loop,
    load_clip,
    load_vqgan,
    prepare_for_loop,
    read_vqgan_spec,
)
from vqclip.optimize import (
    Callback,
    Loop,
    LoopState,
    best_candidates,
    image_losses,
    render,
    start_state,
)
from vqclip.prior import load_prior
from vqclip.prompts import Prompt, parse_prompts, split_prompts
from vqclip.restyle import last_frames, restyle_frames
from vqclip.runstate import STATE, read_state, restore_state, save_state, stop_between_steps
from vqclip.schedule import loop_at, run_schedule
from vqclip.tuning import fast_precision, keep_freed_memory
from vqclip.video import check_video

__all__ = [
    "generate",
    "resume",
    "restyle",
    "prepare",
    "prepare_loop",
    "read_run_config",
    "RunResult",
    "check_inputs",
    "resolve_device",
    "load_models",
    "palette_start",
    "PALETTE",
]

log = logging.getLogger(__name__)

# Flat starting colours for start="palette" (RGB, 0-255): a generic set, not the shapes world's.
PALETTE = {
    "black": (0, 0, 0), "grey": (128, 128, 128), "white": (255, 255, 255),
    "red": (220, 40, 40), "orange": (240, 140, 30), "yellow": (245, 220, 50),
    "green": (40, 170, 60), "cyan": (40, 200, 210), "blue": (40, 70, 220),
    "purple": (140, 50, 190), "pink": (240, 150, 190), "brown": (120, 75, 40),
}  # fmt: skip


@dataclass(frozen=True)
class RunResult:
    """What a generation produced."""

    run_dir: Path  # holds config.json, frames/, final.png and state.pt
    image: torch.Tensor  # (B, 3, H, W) in [0, 1], on the CPU
    config: GenerationConfig  # the resolved config (seed filled in)
    frames: tuple[Path, ...]  # saved frames, in order (NNNNNN-K.png: image K of a batch)
    interrupted: bool  # stopped by KeyboardInterrupt; everything made so far is kept
    finals: tuple[Path, ...]  # final.png, or final-K.png per image of a batch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if present, else CPU; other names as given, if this machine has them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            gpus = f", 'cuda' or 'cuda:0' to 'cuda:{count - 1}'" if count else ""
            raise ValueError(
                f"device: {name!r}, but torch sees {count} CUDA device(s) on this machine; "
                f"expected 'auto', 'cpu'{gpus}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "device: 'mps', but torch has no MPS on this machine; expected 'auto' or 'cpu'"
        )
    return device


def _image_prompts(config: GenerationConfig) -> list[Prompt]:
    targets = [Prompt(path) for path in split_prompts(config.target_images)]
    return parse_prompts(config.image_prompts) + targets


def _check_image_source(path_or_url: str, field: str) -> None:
    """A readable image at a path, or fetched (once, into the cache) from a URL."""
    try:
        check_image(zoo.local_image(path_or_url), field)
    except DownloadError as error:
        raise DownloadError(f"{field}: {error}") from None


def check_inputs(config: GenerationConfig, device: torch.device | None = None) -> None:
    """Check what can be checked before a model is built: images, model files (fetched), sizes
    (against ``device``'s memory), the output directory."""
    check_output_dir(config.output_dir)
    if config.init_image:
        _check_image_source(config.init_image, "init_image")
    if config.init_video:
        check_video(config.init_video, "init_video")
    for prompt in parse_prompts(config.image_prompts):
        _check_image_source(prompt.text, "image_prompts")
    for path in split_prompts(config.target_images):
        _check_image_source(path, "target_images")
    yaml_path, _ = zoo.resolve_vqgan(config.vqgan, config.vqgan_checkpoint)
    spec = read_vqgan_spec(yaml_path)
    factor = spec.factor
    for name in ("width", "height"):
        if getattr(config, name) % factor:
            raise ValueError(
                f"{name}: {getattr(config, name)} is not a multiple of the VQGAN's factor "
                f"{factor} (model {config.vqgan!r}); try {getattr(config, name) // factor * factor or factor}"
            )
    images = config.batch_size * config.best_of
    device = device or resolve_device(config.device)
    check_memory(spec.ddconfig, config.width, config.height, images, device)
    if config.prior:
        _load_prior_cached(zoo.resolve_prior(config.prior), "cpu")  # a valid prior file


@functools.lru_cache(maxsize=4)
def _load_models_cached(
    vqgan_paths: tuple[Path, Path], clip_path: Path, device: str, compiled: bool
) -> tuple[VQGAN, torch.nn.Module]:
    vqgan, clip_model = load_vqgan(*vqgan_paths, device=device), load_clip(clip_path, device=device)
    prepare_for_loop(vqgan, clip_model)
    if compiled:  # its own instances: the cache keeps the eager ones eager
        compile_for_loop(vqgan, clip_model)
    return vqgan, clip_model


@functools.lru_cache(maxsize=4)
def _load_prior_cached(path: Path, device: str) -> torch.nn.Module:
    return load_prior(path, device=device)


def load_models(config: GenerationConfig, device: torch.device) -> tuple[VQGAN, torch.nn.Module]:
    """The config's VQGAN and CLIP (fetched into the cache if needed), loaded once per process
    and rearranged for the loop's speed (:func:`~vqclip.models.prepare_for_loop`: the same
    functions, but not weights to save)."""
    vqgan_paths = zoo.resolve_vqgan(config.vqgan, config.vqgan_checkpoint)
    clip_path = zoo.resolve_clip(config.clip_model)
    return _load_models_cached(vqgan_paths, clip_path, str(device), config.compile)


def palette_start(loop: Loop, config: GenerationConfig, device: torch.device) -> torch.Tensor:
    """Latents of flat palette colours ranked by CLIP against the prompts: (B * best_of, D, h,
    w), each image's candidates taking the best, second best, ... colour."""
    rgb = torch.tensor(list(PALETTE.values()), dtype=torch.float32, device=device) / 255
    flats = rgb.view(-1, 3, 1, 1).expand(-1, 3, config.height, config.width)  # (C, 3, H, W)
    per_image = loop.row_targets[:: config.best_of] or (loop.targets,)  # one, if shared
    orders = [  # (batch_size, C): each image's colours, best first
        image_losses(replace(loop, targets=t, row_targets=()), flats).argsort().tolist()
        for t in per_image
    ] * (1 if loop.row_targets else config.batch_size)
    picks = [order[i % len(order)] for order in orders for i in range(config.best_of)]
    log.info("palette start: %s", [list(PALETTE)[i] for i in picks[: config.best_of]])
    return encode_image(loop.vqgan, flats[picks].contiguous())


def _start_latent(
    config: GenerationConfig, loop: Loop, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    vqgan = loop.vqgan
    f, batch = vqgan.spec.factor, config.batch_size * config.best_of
    if config.init_image:
        size = (config.width, config.height)
        image = load_image(zoo.local_image(config.init_image), size).to(device)
        return encode_image(vqgan, image).repeat(batch, 1, 1, 1)
    if config.start == "palette":
        return palette_start(loop, config, device)
    if config.start in ("pixels", "gradient"):
        noise = noise_image(config.start, batch, config.height, config.width, generator)
        return encode_image(vqgan, noise)
    if config.start == "plain":
        grey = torch.full((batch, 3, config.height, config.width), 0.5, device=device)
        return encode_image(vqgan, grey)
    return random_latent(vqgan.codebook, batch, config.height // f, config.width // f, generator)


def _build_targets(
    config: GenerationConfig,
    clip_model: torch.nn.Module,
    generator: torch.Generator,
    device: torch.device,
    prompt_lists: list[str],
) -> tuple[Targets, ...]:
    """One :class:`Targets` per prompt list (each distinct phase of each image's story),
    each with the image and noise prompts. Every one draws the same image-prompt cutouts, and
    the generator moves on as for one, so a plain run draws exactly what it always did."""
    size = (config.width, config.height)
    before = generator.get_state()
    built = []
    for prompts in prompt_lists:
        generator.set_state(before)
        built.append(
            build_targets(
                clip_model,
                parse_prompts(prompts),
                _image_prompts(config),
                list(zip(config.noise_prompt_seeds, config.noise_prompt_weights, strict=True)),
                lambda path: load_image(zoo.local_image(path), size),
                config.cutn,
                generator,
                device,
            )
        )
    return tuple(built)


def _build_phases(
    config: GenerationConfig,
    clip_model: torch.nn.Module,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[tuple[Targets, tuple[Targets, ...]], ...]:
    """Each prompt phase's (targets shared by the batch, targets per latent row): the rows are
    () unless ``batch_prompts`` gives each image its own story (a shorter one keeps its last
    phase), each image's ``best_of`` candidates in a row with it."""
    stories = config.stories()
    lists = list(dict.fromkeys(phase for story in stories for phase in story))
    built = dict(
        zip(lists, _build_targets(config, clip_model, generator, device, lists), strict=True)
    )
    phases = []
    for index in range(config.phase_count()):
        own = [built[story[min(index, len(story) - 1)]] for story in stories]
        rows = tuple(t for t in own for _ in range(config.best_of)) if config.batch_prompts else ()
        phases.append((own[0], rows))
    return tuple(phases)


def prepare(config: GenerationConfig, device: torch.device) -> tuple[Loop, LoopState]:
    """Models, targets and the starting state for a resolved, checked config."""
    loop, generator = prepare_loop(config, device)
    latent = _start_latent(config, loop, generator, device)
    state = start_state(latent, config.optimizer, config.step_size, generator, config.latent_levels)
    return loop, state


def prepare_loop(config: GenerationConfig, device: torch.device) -> tuple[Loop, torch.Generator]:
    """Models and targets for a resolved, checked config, and the run's generator."""
    vqgan, clip_model = load_models(config, device)
    # The seed is fixed before the first random draw; every draw goes through this generator.
    generator = torch.Generator(device=device).manual_seed(config.seed)
    phases = _build_phases(config, clip_model, generator, device)
    augments = make_augments(config.augments, clip_model.visual.input_resolution)
    loop = Loop(
        vqgan, clip_model, phases[0][0], augments, config.cutn, config.cut_pow,
        config.init_weight, config.seed, config.precision, config.smoothness,
        _load_prior_cached(zoo.resolve_prior(config.prior), str(device)) if config.prior else None,
        config.prior_weight, config.prior_ramp, phases[0][1], config.cut_method,
        phases if len(phases) > 1 else (),
    )  # fmt: skip
    return loop, generator


def generate(config: GenerationConfig, callback: Callback | None = None) -> RunResult:
    """Run one generation; frames, ``config.json`` and ``final.png`` go to a new run directory.

    ``callback`` receives the loop's reports (see :func:`vqclip.optimize.run_loop`) after the
    frame for that step is saved. Ctrl-C stops the run after the step under way (a second one
    at once) and keeps what was made; :func:`resume` goes on from there.
    """
    config = resolve_seed(config)
    device = resolve_device(config.device)
    if config.precision == "auto":  # recorded as what it picks, so that a rerun repeats it
        config = config.replace(precision=fast_precision(device))
    check_inputs(config, device)
    if config.init_video:
        loop, generator = prepare_loop(config, device)
        return restyle(config, loop, generator, create_run_dir(config), callback)
    loop, state = prepare(config, device)
    return _run(config, loop, state, create_run_dir(config), callback)


def resume(
    run_dir: str | Path, max_iterations: int | None = None, callback: Callback | None = None
) -> RunResult:
    """Go on with a stopped run in its own directory, from its last saved state (the step it
    was stopped after, or its last display step); ``max_iterations`` extends a finished run.

    What the run made from that step on (frames, final image, video) moves to a
    ``superseded-NNNNNN`` directory first; on a CPU the run's frames and final image then come
    out bit-identical to those of a run that was never stopped.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if config.init_video:
        return _resume_restyle(run_dir, config, max_iterations, callback)
    saved = read_state(run_dir / STATE)
    if max_iterations is not None:
        config = config.replace(max_iterations=max_iterations)
    if config.max_iterations != -1 and saved["iteration"] >= config.max_iterations:
        raise ValueError(
            f"max_iterations: the run in {run_dir} has done {saved['iteration']} of its "
            f"{config.max_iterations} iterations; give a larger max_iterations to go on"
        )
    check_inputs(config)
    loop, state = prepare(config, resolve_device(config.device))
    restore_state(state, saved)
    aside = set_aside_from(run_dir, state.iteration)
    if aside:
        log.info(
            "resume: moved what the run made from iteration %d on to %s", state.iteration, aside
        )
    write_atomic(run_dir / "config.json", config.to_json().encode())
    return _run(config, loop, state, run_dir, callback)


def _resume_restyle(
    run_dir: Path, config: GenerationConfig, max_iterations: int | None, callback: Callback | None
) -> RunResult:
    """Go on restyling a video: the frames made are kept; the one under way starts again."""
    if max_iterations is not None:
        raise ValueError(
            "max_iterations: a restyled video goes on with the iterations per frame it was "
            f"started with ({config.max_iterations}); leave max_iterations out"
        )
    if any(run_dir.glob("final*.png")):
        raise ValueError(f"resume: every frame of {config.init_video!r} is restyled in {run_dir}")
    check_inputs(config)
    loop, generator = prepare_loop(config, resolve_device(config.device))
    return restyle(config, loop, generator, run_dir, callback)


def read_run_config(run_dir: Path) -> GenerationConfig:
    """The resolved config a run directory was made with (its ``config.json``)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"resume: {run_dir} is not a run directory (no config.json)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"resume: {path} is not valid JSON ({error}); expected a run's config"
        ) from None
    if not isinstance(values, dict):
        raise ValueError(f"resume: {path} holds {type(values).__name__}, expected an object")
    try:
        return GenerationConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"resume: {path}: {error}") from None


def _run(
    config: GenerationConfig,
    loop: Loop,
    state: LoopState,
    run_dir: Path,
    callback: Callback | None,
) -> RunResult:
    """Run the loop into ``run_dir``: frames and state at display steps, then the final image."""
    if state.start.device.type == "cpu":
        keep_freed_memory()
    writer = FrameWriter(run_dir, config)
    between_steps = False  # True while the loop is between two steps: its state is whole

    def report(info: dict) -> None:
        nonlocal between_steps
        between_steps = True
        if "image" in info:  # frames show each image's best candidate so far
            current = loop_at(loop, info["iteration"], config)
            info = {**info, "image": best_candidates(current, info["image"], config.best_of)}
            writer(info)
            save_state(state, run_dir / STATE)
        if callback:
            callback(info)
        stop_requested()
        between_steps = False

    interrupted = False
    with stop_between_steps() as stop_requested:
        try:
            image = run_schedule(loop, state, config, report)
        except KeyboardInterrupt:
            interrupted = True
            image = render(loop, state)
    if between_steps or not interrupted:  # else the last display step's state stays
        save_state(state, run_dir / STATE)
    image = best_candidates(loop_at(loop, state.iteration, config), image, config.best_of)
    if not writer.saved or frame_iteration(writer.saved[-1]) != state.iteration:
        writer({"iteration": state.iteration, "image": image})
    finals = writer.save("final", [to_uint8(x) for x in image], state.iteration)
    return RunResult(run_dir, image.cpu(), config, tuple(writer.saved), interrupted, tuple(finals))


def restyle(
    config: GenerationConfig,
    loop: Loop,
    generator: torch.Generator,
    run_dir: Path,
    callback: Callback | None = None,
) -> RunResult:
    """Restyle ``config.init_video`` into ``run_dir`` (see :mod:`vqclip.restyle`), keeping the
    frames a stopped run made there; ``final.png`` is the last frame's result."""
    if generator.device.type == "cpu":
        keep_freed_memory()
    writer = FrameWriter(run_dir, config)
    set_aside_from(run_dir, len({frame_iteration(path) for path in writer.saved}))  # old video

    def report(info: dict) -> None:
        if callback:
            callback(info)
        stop_requested()

    interrupted = False
    with stop_between_steps() as stop_requested:
        try:
            restyle_frames(config, loop, generator, writer, report)
        except KeyboardInterrupt:
            interrupted = True
    if not writer.saved:
        raise ValueError(f"init_video: no frames could be read from {config.init_video!r}")
    image = last_frames(writer.saved)
    pixels = [to_uint8(x) for x in image]
    finals = [] if interrupted else writer.save("final", pixels, config.max_iterations)
    return RunResult(run_dir, image, config, tuple(writer.saved), interrupted, tuple(finals))
