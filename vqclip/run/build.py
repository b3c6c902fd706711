"""From a resolved config to the loop's parts: files, checked inputs, models (cached), start.

:func:`acquire` fetches every file the config names, once; :func:`check_inputs` checks what can
be checked before a model is built; :func:`prepare_loop` builds the
:class:`~vqclip.loop.optimise.Loop` (generator, perceptors, objective, cuts) and the run's one
random generator; :func:`prepare` adds an optimised generator's starting state and
:func:`prepare_sample` a diffusion sampler and its start. Models are loaded once per process
into :data:`MODELS`, an explicit cache (``MODELS.clear()`` frees them).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vqclip.core import plugins, presets
from vqclip.core.config import NOISE_STARTS, GenerationConfig
from vqclip.core.images import check_image, load_image
from vqclip.core.prompts import REGIONS, Prompt, parse_prompts, split_prompts
from vqclip.loop.composition import ContrastTerm, PaletteTerm, SaturationTerm, Tile, symmetric
from vqclip.loop.cutouts import make_augments
from vqclip.loop.diffusion import Sampler, SampleState
from vqclip.loop.embeddings import build_targets
from vqclip.loop.generators import Generator, PixelGenerator, VQGANGenerator, wrapped_padding
from vqclip.loop.latents import noise_image
from vqclip.loop.objective import (
    InitTerm,
    Objective,
    PerceptorTargets,
    PriorTerm,
    PromptTerm,
    RangeTerm,
    SmoothnessTerm,
    Term,
)
from vqclip.loop.optimise import Cuts, Loop, LoopState, image_losses, start_state
from vqclip.loop.perceptors import CLIP_MEAN, CLIP_STD, Perceptor
from vqclip.models.acquire import RunFiles, acquire, image_sources
from vqclip.models.flow import check_flow_estimator
from vqclip.models.openclip import is_open_clip, load_open_clip
from vqclip.models.prior import load_prior
from vqclip.models.unet import UNet, UNetSpec, load_unet
from vqclip.models.vqgan_clip import (
    VQGAN,
    compile_for_loop,
    load_clip,
    load_vqgan,
    prepare_for_loop,
    read_vqgan_spec,
)
from vqclip.run.frames import check_output_dir
from vqclip.run.memory import check_memory
from vqclip.run.motion import check_depth_model
from vqclip.run.video import check_video

__all__ = [
    "MODELS",
    "ModelCache",
    "PALETTE",
    "resolve_device",
    "acquire",
    "check_inputs",
    "load_models",
    "load_parts",
    "palette_start",
    "prepare_loop",
    "prepare",
    "prepare_sample",
    "load_sampler",
]

log = logging.getLogger(__name__)

# Flat starting colours for start="palette" (RGB, 0-255): a generic set, not the shapes world's.
PALETTE = {
    "black": (0, 0, 0), "grey": (128, 128, 128), "white": (255, 255, 255),
    "red": (220, 40, 40), "orange": (240, 140, 30), "yellow": (245, 220, 50),
    "green": (40, 170, 60), "cyan": (40, 200, 210), "blue": (40, 70, 220),
    "purple": (140, 50, 190), "pink": (240, 150, 190), "brown": (120, 75, 40),
}  # fmt: skip


class ModelCache:
    """Models prepared for the loop, kept so that the next run in this process (a notebook's
    second cell) starts at once; the least recently used goes beyond ``size``."""

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The model under ``key``, loaded by ``load()`` the first time."""
        if key not in self._items:
            self._items[key] = load()
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        return self._items[key]

    def clear(self) -> None:
        """Forget every model (their memory is freed once no run holds them)."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


MODELS = ModelCache()


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


def _check_plugin_names(config: GenerationConfig) -> None:
    """Every term and transform the config names is registered (a plugin may be missing)."""
    for field, named, kinds in (
        ("terms", config.term_weights(), plugins.term_kinds()),
        ("transforms", config.transform_args(), plugins.transform_kinds()),
    ):
        for name, _ in named:
            if name not in kinds:
                raise ValueError(f"{field}: unknown {field[:-1]} {name!r}; expected one of {sorted(kinds)} (from the installed plugins)")  # fmt: skip
    if config.transforms and config.generator == "diffusion":
        raise ValueError("transforms: for an optimised image (generator vqgan or pixels); a diffusion sample is not transformed yet")  # fmt: skip


def check_inputs(
    config: GenerationConfig, files: RunFiles, device: torch.device | None = None
) -> None:
    """Check what can be checked before a model is built, from the files :func:`acquire`
    fetched: images, model files, sizes (against ``device``'s memory), the output directory."""
    check_output_dir(config.output_dir)
    for field, source in image_sources(config):
        check_image(files.image(source), field)
    if config.init_video:
        check_video(config.init_video, "init_video")
    if config.follows_flow():
        check_flow_estimator(config.flow_estimator)
    if config.animation_mode == "3D":
        check_depth_model(config.depth_model)
    _check_plugin_names(config)
    if config.generator == "vqgan":
        spec = read_vqgan_spec(files.vqgan[0])
        factor, ddconfig = spec.factor, spec.ddconfig
        what = f"the VQGAN's factor {factor} (model {config.vqgan!r})"
    elif config.generator == "diffusion":
        unet = UNetSpec.from_dict(files.diffusion[1])
        if config.max_iterations > unet.diffusion_steps:
            raise ValueError(
                f"max_iterations: {config.max_iterations} sampling steps, but "
                f"{config.diffusion_model!r} was trained with {unet.diffusion_steps}; expected "
                f"1 to {unet.diffusion_steps}"
            )
        factor, ddconfig = unet.factor, None
        what = f"the U-Net's factor {factor} (model {config.diffusion_model!r})"
    else:
        factor, ddconfig, what = config.pixel_scale, None, f"pixel_scale {config.pixel_scale}"
    for name in ("width", "height"):
        size = getattr(config, name)
        if size % factor:
            raise ValueError(
                f"{name}: {size} is not a multiple of {what}; try {size // factor * factor or factor}"
            )
    if config.upscale > 1:
        from vqclip.run.upscale import check_upscale

        check_upscale(config.width, config.height, config.upscale)
    images = config.batch_size * config.best_of
    check_memory(
        ddconfig, config.width, config.height, images, device or resolve_device(config.device)
    )
    if config.prior:
        _load_prior(files.prior, torch.device("cpu"))  # a valid prior file
    if config.upscale > 1:
        from vqclip.run.upscale import load_upscaler

        load_upscaler(config.upscaler, path=files.upscaler)  # a valid upscaler, before the run


def _load_prior(path: Path, device: torch.device) -> torch.nn.Module:
    return MODELS.get(("prior", path, str(device)), lambda: load_prior(path, device=device))


def _load_unet(files: RunFiles, device: torch.device) -> UNet:
    path, spec = files.diffusion[0], UNetSpec.from_dict(files.diffusion[1])
    return MODELS.get(("diffusion", path, spec, str(device)), lambda: load_unet(path, spec, device))


def _load_vqgan(paths: tuple[Path, Path], device: torch.device, compiled: bool) -> VQGAN:
    def load() -> VQGAN:
        vqgan = load_vqgan(*paths, device=device)
        prepare_for_loop(vqgan, None)
        if compiled:  # its own instance: the cache keeps the eager one eager
            compile_for_loop(vqgan, None)
        return vqgan

    return MODELS.get(("vqgan", paths, str(device), compiled), load)


def _load_perceptor(name: str, path: Path, device: torch.device, compiled: bool) -> Perceptor:
    def load() -> Perceptor:
        if is_open_clip(path):
            model, mean, std, tokenizer = load_open_clip(path, device=device)
        else:
            model, mean, std, tokenizer = load_clip(path, device=device), CLIP_MEAN, CLIP_STD, None
        prepare_for_loop(None, model)
        if compiled:
            compile_for_loop(None, model)
        return Perceptor(model, mean, std, name, tokenizer)

    return MODELS.get(("clip", name, path, str(device), compiled), load)


def load_models(
    config: GenerationConfig, device: torch.device, files: RunFiles | None = None
) -> tuple[VQGAN | None, tuple[Perceptor, ...]]:
    """The config's VQGAN (None for the pixels generator) and CLIPs (as perceptors), from its
    ``files`` (default: :func:`acquire`'s), loaded once per process and rearranged for the
    loop's speed (:func:`~vqclip.models.vqgan_clip.prepare_for_loop`: the same functions, but
    not weights to save)."""
    files = files or acquire(config)
    perceptors = tuple(
        _load_perceptor(name, files.clips[name], device, config.compile)
        for name, _ in config.clip_models()
    )
    if config.generator != "vqgan":
        return None, perceptors
    return _load_vqgan(files.vqgan, device, config.compile), perceptors


def load_parts(
    config: GenerationConfig, device: torch.device, files: RunFiles
) -> tuple[Generator | None, tuple[Perceptor, ...]]:
    """The config's generator (None for diffusion, which is sampled: :func:`load_sampler`) and
    perceptors."""
    vqgan, perceptors = load_models(config, device, files)
    if config.generator == "diffusion":
        return None, perceptors
    generator = (
        PixelGenerator(config.pixel_scale) if vqgan is None else VQGANGenerator(vqgan, config.tile)
    )
    return generator, perceptors


def load_sampler(config: GenerationConfig, device: torch.device, files: RunFiles) -> Sampler:
    """The sampler of the config's diffusion model: with ``tile``, a U-Net whose convolutions
    pad circularly (a seamless sample); with ``symmetry``, each step's sample mirrored."""
    unet = _load_unet(files, device)
    sampler = Sampler.for_unet(
        unet, config.max_iterations, config.sampler, config.clamp_max, config.precision,
        config.cond_scale,
    )  # fmt: skip
    if config.tile:

        def on_the_torus(x: torch.Tensor, t: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
            with wrapped_padding(unet):
                return unet(x, t, *cond)

        sampler = replace(sampler, model=on_the_torus)
    if config.symmetry != "none":
        sampler = replace(sampler, transforms=(symmetric(config.symmetry, config.symmetry_steps()),))  # fmt: skip
    return sampler


def palette_start(loop: Loop, config: GenerationConfig, device: torch.device) -> torch.Tensor:
    """Parameters of flat palette colours ranked by CLIP against the prompts: (B * best_of, C,
    h, w), each image's candidates taking the best, second best, ... colour."""
    rgb = torch.tensor(list(PALETTE.values()), dtype=torch.float32, device=device) / 255
    flats = rgb.view(-1, 3, 1, 1).expand(-1, 3, config.height, config.width)  # (C, 3, H, W)
    prompts = loop.objective.prompts
    per_image = prompts.row_targets[:: config.best_of] or (prompts.targets,)  # one, if shared
    orders = [  # (batch_size, C): each image's colours, best first
        image_losses(loop.with_targets(t), flats).argsort().tolist() for t in per_image
    ] * (1 if prompts.row_targets else config.batch_size)
    picks = [order[i % len(order)] for order in orders for i in range(config.best_of)]
    log.info("palette start: %s", [list(PALETTE)[i] for i in picks[: config.best_of]])
    return loop.generator.encode(flats[picks].contiguous())


def _start_latent(
    config: GenerationConfig,
    loop: Loop,
    rng: torch.Generator,
    device: torch.device,
    files: RunFiles,
) -> torch.Tensor:
    """The parameters the run starts from: (B * best_of, C, h, w)."""
    batch, size = config.batch_size * config.best_of, (config.height, config.width)
    if config.init_image:
        image = load_image(files.image(config.init_image), size[::-1]).to(device)
        return loop.generator.encode(image).repeat(batch, 1, 1, 1)
    if config.start == "palette":
        return palette_start(loop, config, device)
    if config.start in NOISE_STARTS:
        return loop.generator.encode(noise_image(config.start, batch, *size, rng))
    if config.start == "plain":
        return loop.generator.encode(torch.full((batch, 3, *size), 0.5, device=device))
    return loop.generator.random(batch, *size, rng)


def _build_targets(
    config: GenerationConfig,
    perceptors: tuple[Perceptor, ...],
    rng: torch.Generator,
    device: torch.device,
    prompt_lists: list[str],
    files: RunFiles,
    regions: dict[str, int] | None = None,
) -> list[PerceptorTargets]:
    """Per prompt list (each distinct phase of each image's story), its targets in each
    perceptor's space, with the image and noise prompts. Every one draws the same image-prompt
    cutouts, and the generator moves on as for one, so a plain run draws what it always did."""
    size = (config.width, config.height)
    before = rng.get_state()
    after = None
    built = []
    for prompts in prompt_lists:
        targets = []
        for perceptor in perceptors:
            rng.set_state(before)
            targets.append(
                build_targets(
                    perceptor,
                    parse_prompts(prompts),
                    _image_prompts(config),
                    list(zip(config.noise_prompt_seeds, config.noise_prompt_weights, strict=True)),
                    lambda path: load_image(files.image(path), size),
                    config.cutn,
                    rng,
                    device,
                    regions or None,
                )
            )
            after = rng.get_state() if after is None else after
        built.append(tuple(targets))
    rng.set_state(after)
    return built


def region_boxes(
    config: GenerationConfig, files: RunFiles
) -> dict[str, tuple[float, float, float, float]]:
    """Each region the prompts name (every phase's, and the image prompts'), in order, with its
    box as fractions: a named one's, or a mask image's white pixels' bounding box."""
    prompts = [p for story in config.stories() for phase in story for p in parse_prompts(phase)]
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for prompt in [*prompts, *_image_prompts(config)]:
        if prompt.region is None or prompt.region in boxes:
            continue
        if prompt.region.lower() in REGIONS:
            boxes[prompt.region] = REGIONS[prompt.region.lower()]
            continue
        mask = load_image(files.image(prompt.region), field="prompts")[0].mean(0) > 0.5
        if not mask.any():
            raise ValueError(f"prompts: the mask {prompt.region!r} has no white pixels; expected white where the prompt applies")  # fmt: skip
        ys, xs = mask.nonzero(as_tuple=True)
        height, width = mask.shape
        boxes[prompt.region] = (
            float(xs.min()) / width, float(ys.min()) / height,
            float(xs.max() + 1) / width, float(ys.max() + 1) / height,
        )  # fmt: skip
    return boxes


def _prompt_term(
    config: GenerationConfig,
    perceptors: tuple[Perceptor, ...],
    rng: torch.Generator,
    device: torch.device,
    files: RunFiles,
    regions: dict[str, int] | None = None,
) -> PromptTerm:
    """The prompts of every phase: (targets shared by the batch, targets per latent row), the
    rows () unless ``batch_prompts`` gives each image its own story (a shorter one keeps its
    last phase), each image's ``best_of`` candidates in a row with it; each in every
    perceptor's space, weighted as ``clip_model`` says."""
    stories = config.stories()
    lists = list(dict.fromkeys(phase for story in stories for phase in story))
    targets = _build_targets(config, perceptors, rng, device, lists, files, regions)
    built = dict(zip(lists, targets, strict=True))
    phases = []
    for index in range(config.phase_count()):
        own = [built[story[min(index, len(story) - 1)]] for story in stories]
        rows = tuple(t for t in own for _ in range(config.best_of)) if config.batch_prompts else ()
        phases.append((own[0], rows))
    story = tuple(phases) if len(phases) > 1 else ()
    weights = tuple(weight for _, weight in config.clip_models())
    names = tuple(p.name for p in perceptors)
    scale = config.clip_guidance_scale if config.generator == "diffusion" else 1.0
    return PromptTerm(
        weight=scale, targets=phases[0][0], row_targets=phases[0][1], phases=story,
        weights=weights, names=names,
    )  # fmt: skip


def _pulls(
    config: GenerationConfig, device: torch.device, generator: Generator | None, files: RunFiles
) -> tuple[Term, ...]:
    """The objective's pulls that the config turns on, in the order the loss adds them."""
    pulls: list[Term] = []
    if config.init_weight:
        pulls.append(InitTerm("init", config.init_weight))
    if config.smoothness:
        pulls.append(SmoothnessTerm("smoothness", config.smoothness))
    if config.prior and config.prior_weight:
        prior = _load_prior(files.prior, device)
        # An optimised generator is pulled in its own parameters; a diffusion sample's pixels.
        encode = None if generator is None else generator.encode
        pulls.append(PriorTerm("prior", config.prior_weight, config.prior_ramp, prior, encode))
    if config.generator == "diffusion":  # Crowson's tv on [-1, 1] is 4x ours on [0, 1] pixels
        if config.tv_scale:
            pulls.append(SmoothnessTerm("tv", 4 * config.tv_scale))
        if config.range_scale:
            pulls.append(RangeTerm("range", config.range_scale))
    if config.palette:
        colors = torch.tensor(config.palette_colors(), dtype=torch.float32, device=device)
        pulls.append(PaletteTerm("palette", config.palette_weight, colors=colors))
    if config.saturation_weight:
        pulls.append(SaturationTerm("saturation", config.saturation_weight))
    if config.contrast_weight:
        pulls.append(ContrastTerm("contrast", config.contrast_weight))
    kinds = plugins.term_kinds() if config.terms else {}
    pulls += [kinds[name].make(weight, config, device) for name, weight in config.term_weights()]
    return tuple(pulls)


def prepare_loop(
    config: GenerationConfig, device: torch.device, files: RunFiles | None = None
) -> tuple[Loop, torch.Generator]:
    """The loop for a checked config (from its ``files``, default: :func:`acquire`'s), and
    the run's random generator."""
    config = presets.apply(config)  # a no-op for a run's resolved config
    files = files or acquire(config)
    generator, perceptors = load_parts(config, device, files)
    # The seed is fixed before the first random draw; every draw goes through this generator.
    rng = torch.Generator(device=device).manual_seed(config.seed)
    boxes = region_boxes(config, files)
    regions = {name: index + 1 for index, name in enumerate(boxes)}
    objective = Objective(
        _prompt_term(config, perceptors, rng, device, files, regions),
        _pulls(config, device, generator, files),
    )
    augments = tuple(make_augments(config.augments, p.input_resolution) for p in perceptors)
    cuts = Cuts(
        augments, config.cutn, config.cut_pow, config.cut_method, config.cutn_batches,
        tuple(boxes.values()),
    )  # fmt: skip
    if config.cut_overview:  # Disco's cut schedule, at step 0 (stories.loop_at moves it on)
        overview, crops, grey = config.cuts_at(0)
        cuts = replace(cuts, cutn=overview + crops, cut_pow=config.cut_ic_pow, overview=overview, grey=grey)  # fmt: skip
    kinds = plugins.transform_kinds() if config.transforms else {}
    transforms = tuple(kinds[name].make(arg, config) for name, arg in config.transform_args())
    if config.symmetry != "none" and config.generator != "diffusion":  # a sample's: its sampler's
        transforms = (symmetric(config.symmetry, config.symmetry_steps()), *transforms)
    if config.tile:
        transforms = (*transforms, Tile(config.seed))
    loop = Loop(
        generator, perceptors, objective, cuts, config.seed, config.precision, config.ema,
        transforms=transforms, step_sizes=config.step_size_at if config.step_decay else None,
    )  # fmt: skip
    return loop, rng


def prepare_sample(
    config: GenerationConfig, device: torch.device, files: RunFiles | None = None
) -> tuple[Loop, Sampler, SampleState]:
    """For a checked diffusion config: the loop that scores the sample, the sampler and its
    starting state, from its ``files`` (default: :func:`acquire`'s)."""
    config = presets.apply(config)
    files = files or acquire(config)
    loop, rng = prepare_loop(config, device, files)
    sampler = load_sampler(config, device, files)
    sampler.condition(loop, 1)  # a model that reads a CLIP the config does not name: refused now
    size, batch = (config.height, config.width), config.batch_size * config.best_of
    init = None
    if config.init_image:
        init = load_image(files.image(config.init_image), size[::-1]).to(device)
    return loop, sampler, sampler.start(batch, *size, rng, init, config.skip_timesteps)


def prepare(
    config: GenerationConfig, device: torch.device, files: RunFiles | None = None
) -> tuple[Loop, LoopState]:
    """The loop and its starting state for a checked config of an optimised generator (vqgan,
    pixels; diffusion is sampled: :func:`prepare_sample`), from its ``files`` (default:
    :func:`acquire`'s)."""
    config = presets.apply(config)
    if config.generator == "diffusion":
        raise ValueError("generator: diffusion is sampled, not optimised; prepare_sample builds it")  # fmt: skip
    files = files or acquire(config)
    loop, rng = prepare_loop(config, device, files)
    latent = _start_latent(config, loop, rng, device, files)
    state = start_state(latent, config.optimizer, config.step_size, rng, config.latent_levels)
    return loop, state
