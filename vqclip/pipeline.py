"""generate(config): check inputs, load models, run the loop, save frames and the final image."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from vqclip import zoo
from vqclip.config import GenerationConfig, resolve_seed
from vqclip.cutouts import make_augments
from vqclip.embeddings import build_targets
from vqclip.frames import FrameWriter, create_run_dir
from vqclip.images import check_image, load_image, to_uint8
from vqclip.latents import encode_image, random_latent
from vqclip.models import VQGAN, load_clip, load_vqgan, read_vqgan_spec
from vqclip.optimize import (
    Callback,
    Loop,
    LoopState,
    best_candidates,
    image_losses,
    render,
    run_loop,
    start_state,
)
from vqclip.prior import load_prior
from vqclip.prompts import Prompt, parse_prompts, split_prompts
from vqclip.tuning import keep_freed_memory

__all__ = [
    "generate",
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

    run_dir: Path  # holds config.json, frames/ and final.png
    image: torch.Tensor  # (B, 3, H, W) in [0, 1], on the CPU
    config: GenerationConfig  # the resolved config (seed filled in)
    frames: tuple[Path, ...]  # saved frames, in order
    interrupted: bool  # stopped by KeyboardInterrupt; everything made so far is kept


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if present, else CPU; other names as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _image_prompts(config: GenerationConfig) -> list[Prompt]:
    targets = [Prompt(path) for path in split_prompts(config.target_images)]
    return parse_prompts(config.image_prompts) + targets


def check_inputs(config: GenerationConfig) -> None:
    """Check what can be checked before a model is built: images, model files (fetched), sizes."""
    if config.init_image:
        check_image(config.init_image, "init_image")
    for prompt in parse_prompts(config.image_prompts):
        check_image(zoo.local_image(prompt.text), "image_prompts")
    for path in split_prompts(config.target_images):
        check_image(zoo.local_image(path), "target_images")
    yaml_path, _ = zoo.resolve_vqgan(config.vqgan, config.vqgan_checkpoint)
    factor = read_vqgan_spec(yaml_path).factor
    for name in ("width", "height"):
        if getattr(config, name) % factor:
            raise ValueError(
                f"{name}: {getattr(config, name)} is not a multiple of the VQGAN's factor "
                f"{factor} (model {config.vqgan!r}); try {getattr(config, name) // factor * factor or factor}"
            )
    if config.prior:
        prior = _load_prior_cached(zoo.resolve_prior(config.prior), "cpu")
        if (config.width, config.height) != (prior.resolution, prior.resolution):
            raise ValueError(
                f"prior: {config.prior!r} works on {prior.resolution}x{prior.resolution} images; "
                f"got width {config.width} and height {config.height}"
            )


@functools.lru_cache(maxsize=4)
def _load_models_cached(
    vqgan_paths: tuple[Path, Path], clip_path: Path, device: str
) -> tuple[VQGAN, torch.nn.Module]:
    return load_vqgan(*vqgan_paths, device=device), load_clip(clip_path, device=device)


@functools.lru_cache(maxsize=4)
def _load_prior_cached(path: Path, device: str) -> torch.nn.Module:
    return load_prior(path, device=device)


def load_models(config: GenerationConfig, device: torch.device) -> tuple[VQGAN, torch.nn.Module]:
    """The config's VQGAN and CLIP (fetched into the cache if needed), loaded once per process."""
    vqgan_paths = zoo.resolve_vqgan(config.vqgan, config.vqgan_checkpoint)
    clip_path = zoo.resolve_clip(config.clip_model)
    return _load_models_cached(vqgan_paths, clip_path, str(device))


def palette_start(loop: Loop, config: GenerationConfig, device: torch.device) -> torch.Tensor:
    """Latents of flat palette colours ranked by CLIP against the prompts: (B * best_of, D, h,
    w), each image's candidates taking the best, second best, ... colour."""
    rgb = torch.tensor(list(PALETTE.values()), dtype=torch.float32, device=device) / 255
    flats = rgb.view(-1, 3, 1, 1).expand(-1, 3, config.height, config.width)  # (C, 3, H, W)
    order = image_losses(loop, flats).argsort().tolist()
    picks = [order[i % len(order)] for i in range(config.best_of)] * config.batch_size
    log.info("palette start: %s", [list(PALETTE)[i] for i in picks[: config.best_of]])
    return encode_image(loop.vqgan, flats[picks].contiguous())


def _start_latent(
    config: GenerationConfig, loop: Loop, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    vqgan = loop.vqgan
    f, batch = vqgan.spec.factor, config.batch_size * config.best_of
    if config.init_image:
        image = load_image(config.init_image, (config.width, config.height)).to(device)
        return encode_image(vqgan, image).repeat(batch, 1, 1, 1)
    if config.start == "palette":
        return palette_start(loop, config, device)
    if config.start == "plain":
        grey = torch.full((batch, 3, config.height, config.width), 0.5, device=device)
        return encode_image(vqgan, grey)
    return random_latent(vqgan.codebook, batch, config.height // f, config.width // f, generator)


def prepare(config: GenerationConfig, device: torch.device) -> tuple[Loop, LoopState]:
    """Models, targets and the starting state for a resolved, checked config."""
    vqgan, clip_model = load_models(config, device)
    # The seed is fixed before the first random draw; every draw goes through this generator.
    generator = torch.Generator(device=device).manual_seed(config.seed)
    size = (config.width, config.height)
    targets = build_targets(
        clip_model,
        parse_prompts(config.prompts),
        _image_prompts(config),
        list(zip(config.noise_prompt_seeds, config.noise_prompt_weights, strict=True)),
        lambda path: load_image(zoo.local_image(path), size),
        config.cutn,
        generator,
        device,
    )
    augments = make_augments(config.augments, clip_model.visual.input_resolution)
    loop = Loop(
        vqgan, clip_model, targets, augments, config.cutn, config.cut_pow,
        config.init_weight, config.seed, config.precision, config.smoothness,
        _load_prior_cached(zoo.resolve_prior(config.prior), str(device)) if config.prior else None,
        config.prior_weight, config.prior_ramp,
    )  # fmt: skip
    latent = _start_latent(config, loop, generator, device)
    state = start_state(latent, config.optimizer, config.step_size, generator, config.latent_levels)
    return loop, state


def generate(config: GenerationConfig, callback: Callback | None = None) -> RunResult:
    """Run one generation; frames, ``config.json`` and ``final.png`` go to a new run directory.

    ``callback`` receives the loop's reports (see :func:`vqclip.optimize.run_loop`) after the
    frame for that step is saved. Ctrl-C stops the run and keeps what was made.
    """
    config = resolve_seed(config)
    check_inputs(config)
    device = resolve_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()
    loop, state = prepare(config, device)
    run_dir = create_run_dir(config)
    writer = FrameWriter(run_dir, config)

    def report(info: dict) -> None:
        if "image" in info:  # frames show each image's best candidate so far
            info = {**info, "image": best_candidates(loop, info["image"], config.best_of)}
        writer(info)
        if callback:
            callback(info)

    interrupted = False
    try:
        image = run_loop(loop, state, config.max_iterations, config.display_frequency, report)
    except KeyboardInterrupt:
        interrupted = True
        image = render(loop, state)
    image = best_candidates(loop, image, config.best_of)
    final = {"iteration": state.iteration, "image": image}
    if not writer.saved or not writer.saved[-1].stem.startswith(f"{state.iteration:06d}"):
        writer(final)
    writer.save("final", [to_uint8(x) for x in image], state.iteration)
    return RunResult(run_dir, image.cpu(), config, tuple(writer.saved), interrupted)
