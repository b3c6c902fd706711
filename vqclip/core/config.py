"""GenerationConfig: every setting of one generation, validated, saved as ``config.json``."""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from vqclip.core import limits
from vqclip.core.prompts import is_keyed, parse_prompts, split_keyed, split_phases, split_prompts
from vqclip.core.schedules import Schedule, parse_schedule, parse_step_list, step_value

__all__ = [
    "GenerationConfig", "OPTIMIZERS", "PRECISIONS", "AUGMENTS", "STARTS", "resolve_seed",
    "parse_clip_models",
]  # fmt: skip

OPTIMIZERS = (
    "Adam", "AdamW", "Adagrad", "Adamax", "NAdam", "RAdam", "RMSprop", "SGD", "DiffGrad", "AdamP",
)  # fmt: skip
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
STARTS = ("random", "plain", "palette", "pixels", "gradient", "perlin", "fractal")
NOISE_STARTS = ("pixels", "gradient", "perlin", "fractal")  # images drawn, then encoded
CUT_METHODS = ("crops", "pooling")
# Augmentation names of the classic scripts: affine, perspective, colour jitter, erasing,
# horizontal flip, sharpness, resized crop, thin-plate spline, rotation, elastic, padded crop,
# Gaussian noise, Gaussian blur.
AUGMENTS = ("Af", "Pe", "Ji", "Er", "Hf", "Sh", "Re", "Ts", "Ro", "Et", "Cr", "Gn", "Gb")
ANIMATION_MODES = ("none", "2D", "3D")
# The settings that are schedules: a number, "0: (1.0), 50: (1.05)", or an expression of t.
SCHEDULES = ("zoom", "angle", "translation_x", "translation_y", "translation_z", "rotation_3d_x",
             "rotation_3d_y", "rotation_3d_z", "fov", "frame_strength", "frame_noise",
             "frame_contrast")  # fmt: skip
_SCHEDULE_HELP = ' (a schedule: a number, "0: (0), 50: (2)", or an expression of t, max_f and s)'
PADDINGS = ("reflection", "border", "zeros", "wrap")
HEXAGONAL = ("p3", "p31m", "p3m1", "p6", "p6m")  # tiles of a hexagonal lattice: sides 1:√3
WALLPAPERS = ("cm", "pmg", "pgg", "cmm", "p4g", *HEXAGONAL)  # the image made the mean under them
SYMMETRIES = ("none", "horizontal", "vertical", "both", "rotate2", "rotate4", "glide",
              "kaleidoscope", *WALLPAPERS)  # fmt: skip
COLOR_NAMES = {
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "pink": (240, 130, 180),
    "brown": (120, 70, 30),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "cyan": (30, 200, 220),
    "magenta": (210, 40, 190),
}  # fmt: skip  -- red ... white as the shapes world draws them
MAX_FRAMES = 100_000  # an animation's frames: over two hours at 12 a second
MAX_CADENCE = 50  # frames per sampled frame
SAMPLINGS = ("bilinear", "bicubic", "nearest")
COHERENCES = ("none", "rgb", "hsv", "lab")  # the colour spaces frames keep frame 0's colours in
_TEXT_FIELDS = (
    "prompts", "image_prompts", "init_image", "init_video", "prior", "target_images", "vqgan",
    "vqgan_checkpoint", "clip_model", "optimizer", "cut_method", "start", "device", "precision",
    "output_dir", "run_name", "generator", "precision_choice", "diffusion_model", "sampler",
    "upscaler", "terms", "transforms", "animation_mode", "padding_mode", "sampling_mode",
    "depth_model", *SCHEDULES, "color_coherence", "symmetry", "palette", "soundtrack", "flow_estimator",
    "cut_overview", "cut_innercut", "cut_icgray_p",
)  # fmt: skip
_OPTIONAL = ("init_image", "init_video", "prior", "vqgan_checkpoint", "run_name", "start", "upscaler", "soundtrack")  # fmt: skip
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_MAX_TEXT = 65_536  # characters in one text field
# The largest value of each integer field (MAX_STEPS for the others): bounds checked before any
# work, so that no setting can ask for an allocation or a loop beyond what a run could use.
_MAXIMA = {
    "width": limits.MAX_SIDE, "height": limits.MAX_SIDE, "cutn": limits.MAX_CUTN,
    "cutn_batches": limits.MAX_CUTN, "batch_size": limits.MAX_IMAGES,
    "best_of": limits.MAX_IMAGES, "latent_levels": 8, "pixel_scale": 64,
}  # fmt: skip


def _field(default: Any, help: str, group: str, flag: bool = True) -> Any:  # noqa: A002
    """A config field with its ``--help`` text and its section (an argument group there);
    ``flag=False`` for what a run records but nobody sets."""
    metadata = {"help": help, "group": group, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


PROMPTS, MODEL, OUTPUT, STEPS, START, VIDEO, ANIMATION, RUN = (
    "prompts", "model and generator", "image size and output", "optimisation", "start and pulls",
    "stories, zoom and video", "animation (docs/animation.md)", "device and run",
)  # fmt: skip
GENERATORS = ("vqgan", "pixels", "diffusion")
SCALES = (1, 2, 3, 4)  # upscale factors; 1: none
SAMPLERS = ("ddpm", "ddim")
_PRESET = "default: the model's preset"


@dataclass(frozen=True)
class GenerationConfig:
    """All settings of one generation; field names are the CLI flags and the JSON keys.

    A field left at ``None`` (``"auto"`` for ``prior``) takes the model's preset
    (:mod:`vqclip.core.presets`) when the run starts; ``config.json`` records what it took.
    """

    # -- prompts
    prompts: str = _field("", '"text:weight:stop | text"; weight may be negative; "a ^ b": two phases', PROMPTS)  # fmt: skip
    batch_prompts: tuple[str, ...] = _field((), 'prompts (or a "^" story) per image, in one batch', PROMPTS)  # fmt: skip
    image_prompts: str = _field("", '"path-or-URL:weight | ..." images whose CLIP embedding pulls', PROMPTS)  # fmt: skip
    noise_prompt_seeds: tuple[int, ...] = _field((), "one random-embedding prompt per seed", PROMPTS)  # fmt: skip
    noise_prompt_weights: tuple[float, ...] = _field((), "their weights, same length as the seeds", PROMPTS)  # fmt: skip
    target_images: str = _field("", '"path | path": extra image prompts with weight 1', PROMPTS)
    # -- model and generator
    generator: str = _field("vqgan", "what makes the image: an optimised VQGAN latent or pixels, or a diffusion model sampled under CLIP's guidance", MODEL)  # fmt: skip
    pixel_scale: int = _field(1, "pixels generator: image pixels per optimised pixel, each way", MODEL)  # fmt: skip
    vqgan: str = _field("shapes-vqgan", "registry name, or a path to a VQGAN YAML config", MODEL)
    vqgan_checkpoint: str | None = _field(None, "checkpoint for a YAML path; default: YAML with .ckpt", MODEL)  # fmt: skip
    diffusion_model: str = _field("shapes-diffusion", 'diffusion generator: registry name (e.g. "256x256_diffusion_uncond") or a path to a U-Net state dict with its flags in a .json beside it', MODEL)  # fmt: skip
    sampler: str = _field("ddpm", 'diffusion generator: "ddpm" (guided mean, fresh noise each step) or "ddim" (deterministic, guided noise estimate)', MODEL)  # fmt: skip
    clip_model: str = _field("shapes-clip", 'registry name (e.g. "ViT-B/32") or a path to a CLIP file; several at once: "ViT-B/32 + RN50:0.5" (each with its weight)', MODEL)  # fmt: skip
    # -- image size and output
    width: int | None = _field(None, f"output width in pixels, a multiple of the generator's factor ({_PRESET})", OUTPUT)  # fmt: skip
    height: int | None = _field(None, f"output height in pixels, likewise ({_PRESET})", OUTPUT)
    display_frequency: int = _field(10, "save (and show) a frame every this many steps", OUTPUT)
    output_dir: str = _field("outputs", "each run gets a new directory under this one", OUTPUT)
    run_name: str | None = _field(None, "run directory name; default: time, prompt and seed", OUTPUT)  # fmt: skip
    upscale: int = _field(1, "also write the final image(s) this many times larger (final_x4.png; 1, 2, 3 or 4), and the video's frames with --video", OUTPUT)  # fmt: skip
    upscaler: str | None = _field(None, f'what upscales: a registry name (e.g. "RealESRGAN_x4plus"), a path to ESRGAN-family weights, or "lanczos" ({_PRESET})', OUTPUT)  # fmt: skip
    # -- optimisation
    max_iterations: int | None = _field(None, f"optimisation steps (-1 runs until interrupted); diffusion: the sampling steps its schedule is respaced to ({_PRESET})", STEPS)  # fmt: skip
    step_size: float | None = _field(None, f"optimiser learning rate ({_PRESET})", STEPS)
    step_decay: int | None = _field(None, f"over the last this many steps of the run (of each frame, in an animation) the step size falls linearly to a tenth, so the image settles on what it is pulled toward; 0: a constant step ({_PRESET})", STEPS)  # fmt: skip
    optimizer: str = _field("Adam", "Adam AdamW AdamP DiffGrad NAdam RAdam Adagrad Adamax RMSprop SGD", STEPS)  # fmt: skip
    cutn: int | None = _field(None, f"cutouts scored by CLIP per step ({_PRESET})", STEPS)
    cutn_batches: int = _field(1, "score the cutouts in this many sequential batches, gradients accumulated: the same step in about 1/N of CLIP's memory", STEPS)  # fmt: skip
    cut_pow: float = _field(1.0, "cutout size exponent: > 1 favours small cutouts", STEPS)
    cut_method: str = _field("crops", 'random "crops", or "pooling": the whole image, as generate.py', STEPS)  # fmt: skip
    cut_overview: str = _field("", 'Disco\'s cut schedule (with cut_innercut, in place of cutn): whole-image views per step, a number or a list spread over the run, e.g. "[12]*400+[4]*600"', STEPS)  # fmt: skip
    cut_innercut: str = _field("", 'Disco\'s cut schedule: random crops per step, e.g. "[4]*400+[12]*600"', STEPS)  # fmt: skip
    cut_icgray_p: str = _field("", 'with cut_innercut: the share of crops in greyscale, a number or a list, e.g. "[0.2]*400+[0]*600"', STEPS)  # fmt: skip
    cut_ic_pow: float = _field(1.0, "with cut_innercut: the crops' size exponent (> 1 favours small crops)", STEPS)  # fmt: skip
    augments: tuple[str, ...] | None = _field(None, f"kornia augmentations of cutouts ({_PRESET}: the classic Af Pe Ji Er)", STEPS)  # fmt: skip
    latent_levels: int | None = _field(None, f"optimise as a pyramid of this many resolutions, 1: classic ({_PRESET})", STEPS)  # fmt: skip
    batch_size: int = _field(1, "images optimised together as one batch (one seed for the batch)", STEPS)  # fmt: skip
    best_of: int | None = _field(None, f"candidates per image, in the same batch; CLIP keeps the best ({_PRESET})", STEPS)  # fmt: skip
    seed: int = _field(-1, "seed of every random draw; -1 picks one and records it", STEPS)
    clip_guidance_scale: float | None = _field(None, f"diffusion: weight of CLIP's prompt loss in the guidance ({_PRESET})", STEPS)  # fmt: skip
    tv_scale: float | None = _field(None, f"diffusion: weight of the clean estimate's total variation, as Crowson's ({_PRESET})", STEPS)  # fmt: skip
    range_scale: float | None = _field(None, f"diffusion: weight of the clean estimate's values beyond [-1, 1] ({_PRESET})", STEPS)  # fmt: skip
    clamp_max: float | None = _field(None, f"diffusion: the guidance gradient's largest RMS per image, 0 = unclamped ({_PRESET})", STEPS)  # fmt: skip
    cond_scale: float | None = _field(None, f"diffusion, a model that reads the prompts (as shapes-diffusion): classifier-free guidance, its estimate pushed this many times from the unconditional toward the conditional; 1 = the conditional alone ({_PRESET})", STEPS)  # fmt: skip
    skip_timesteps: int = _field(0, "diffusion with init_image: skip this many sampling steps, starting from the init image noised to that level", STEPS)  # fmt: skip
    # -- start and pulls
    start: str | None = _field(None, "random codes, plain grey, palette colour (CLIP's closest flat colour; best_of's candidates take the next), pixels/gradient/perlin/fractal noise (encoded as an init image); without init_image" + f" ({_PRESET})", START)  # fmt: skip
    init_image: str | None = _field(None, "path or URL: start from its latent, not random codes", START)  # fmt: skip
    init_weight: float = _field(0.0, "pull toward the starting latent (MSE), 0 = off", START)
    smoothness: float = _field(0.0, "weight of the image's total variation (flat regions), 0 = off", START)  # fmt: skip
    prior: str | None = _field("auto", f'image prior: registry name (e.g. "shapes-prior"), a path, or none ({_PRESET})', START)  # fmt: skip
    prior_weight: float | None = _field(None, f"pull toward the prior's redrawing of the image, 0 = off ({_PRESET})", START)  # fmt: skip
    prior_ramp: int | None = _field(None, f"iterations over which that pull grows from 0 to prior_weight ({_PRESET})", START)  # fmt: skip
    symmetry: str = _field("none", '"horizontal": the left half mirrored onto the right, "vertical": the top onto the bottom, "both", "rotate2": the top half turned half a turn onto the bottom, "rotate4": the top-left quarter turned onto each corner (square), "glide": the left half beside itself upside down (even width; with tile, a pg wallpaper), "kaleidoscope": mirrored across both axes and both diagonals (square; with tile, p4m); the wallpaper groups "cm", "pmg", "pgg", "cmm", "p4g" (the image is their cell: even sides, p4g square; use with tile) and the hexagonal "p3", "p31m", "p3m1", "p6", "p6m" (the sides 1:√3, such as 64x112); or "none"', START)  # fmt: skip
    symmetry_share: float = _field(1.0, "the share of the steps, from the first, that symmetry holds for; the rest go on freely", START)  # fmt: skip
    symmetry_at: tuple[float, ...] = _field((), "diffusion: make the sample symmetric only at these shares of its steps, once each (Disco's transformation_percent, such as 0.09); empty: every step, up to symmetry_share", START)  # fmt: skip
    tile: bool = _field(False, "a seamless texture: the image rolled on a torus before each step's cutouts, so that its edges meet", START)  # fmt: skip
    palette: str = _field("", 'colours by name or hex ("red, #1e3cdc"): pull each pixel to its nearest', START)  # fmt: skip
    palette_weight: float = _field(1.0, "weight of the palette's pull (with palette)", START)
    saturation_weight: float = _field(0.0, "pull toward saturated colour, 0 = off", START)
    contrast_weight: float = _field(0.0, "pull toward spread brightness (a standard deviation of 0.25), 0 = off", START)  # fmt: skip
    terms: str = _field("", 'objective terms from plugins: "NAME:WEIGHT, NAME:WEIGHT"', START)
    transforms: str = _field("", 'image transforms from plugins, applied to every rendered image before it is scored and shown: "NAME, NAME:ARG"', START)  # fmt: skip
    # -- stories, zoom and video
    prompt_every: int = _field(0, 'iterations per phase of a "^" story; 0: max_iterations shared out', VIDEO)  # fmt: skip
    zoom_every: int = _field(0, "zoom video: zoom the image and start afresh from it this often; 0 = off", VIDEO)  # fmt: skip
    zoom_start: int = _field(0, "iteration of the first zoom (0: zoom_every), then every zoom_every", VIDEO)  # fmt: skip
    zoom_scale: float = _field(1.05, "each zoom's factor about the centre (> 1 in, < 1 out)", VIDEO)
    zoom_shift_x: float = _field(0.0, "each zoom moves the image this many pixels right", VIDEO)
    zoom_shift_y: float = _field(0.0, "and this many pixels down", VIDEO)
    zoom_rotate: float = _field(0.0, "and turns it this many degrees anticlockwise", VIDEO)
    init_video: str | None = _field(None, "restyle a video (or folder of frames): a run per frame", VIDEO)  # fmt: skip
    video_frames: int = _field(0, "restyle at most this many frames of init_video (0: all)", VIDEO)
    video_stride: int = _field(1, "restyle every Nth frame of init_video", VIDEO)
    soundtrack: str | None = _field(None, "a sound file under the run's video (a restyle keeps its source's sound without one)", VIDEO)  # fmt: skip
    soundtrack_offset: float = _field(0.0, "seconds into the soundtrack at which the video starts", VIDEO)  # fmt: skip
    video_fps: float = _field(0.0, "restyle init_video sampled at this frame rate (the stride that comes nearest); 0: every video_stride-th frame", VIDEO)  # fmt: skip
    frame_init_weight: float = _field(0.0, "restyle: each frame starts from this blend of the previous frame's result with its own source frame (0: the source alone; 0.5: half each)", VIDEO)  # fmt: skip
    temporal_weight: float = _field(0.0, "restyle: pull each frame toward the previous frame's result (pixel MSE), 0 = off", VIDEO)  # fmt: skip
    flow_warp: bool = _field(False, "restyle: start each frame from the previous frame's result warped along the source's optical flow, where the flow holds", VIDEO)  # fmt: skip
    flow_blend: float = _field(1.0, "restyle with flow_warp: the share of the warped result in a frame's start where the flow holds (the source frame elsewhere)", VIDEO)  # fmt: skip
    flow_weight: float = _field(0.0, "restyle: pull each frame toward the previous frame's result warped along the flow, where it holds (pixel MSE), 0 = off", VIDEO)  # fmt: skip
    flow_long_term: int = _field(0, "restyle with flow_weight: also pull toward the results of this many frames further back, each warped along the flow from its source frame, where it holds (weight flow_weight / frames back)", VIDEO)  # fmt: skip
    flow_estimator: str = _field("dis", 'restyle with flow: "dis" (OpenCV, no weights), "raft_small" or "raft_large" (torchvision\'s RAFT, weights from the registry), or a plugin\'s', VIDEO)  # fmt: skip
    # -- animation
    animation_mode: str = _field("none", '"2D" moves the picture, "3D" a camera through it (with depth_model), between frames; "none": one image', ANIMATION)  # fmt: skip
    max_frames: int = _field(0, "animation: how many frames", ANIMATION)
    steps_per_frame: int = _field(10, "animation: optimisation steps per frame, each from the moved previous frame", ANIMATION)  # fmt: skip
    first_frame_steps: int = _field(0, "animation: steps of the first frame, made from the start (0: steps_per_frame)", ANIMATION)  # fmt: skip
    prompt_blend: int = _field(0, "animation: frames over which prompts keyed by frame blend into the next key's, from the key on (their losses interpolated); 0: they change at once", ANIMATION)  # fmt: skip
    cadence: int = _field(1, "animation: optimise or sample every Nth frame (at most steps_per_frame); the frames between are the last two such frames moved along the camera and cross-faded (Disco's turbo, Deforum's cadence)", ANIMATION)  # fmt: skip
    frame_strength: str = _field("0.6", "diffusion animation: how much of the moved previous frame each frame keeps: it is noised to the level this share of the way through the schedule and sampled back (0: a fresh sample each frame)" + _SCHEDULE_HELP + ", as Deforum's strength_schedule", ANIMATION)  # fmt: skip
    frame_noise: str = _field("0", "animation: Gaussian noise added to each moved frame before it is optimised or sampled, its standard deviation in half the range of a pixel (Deforum's noise_schedule: 0.02 is a little grain that keeps detail coming)" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    frame_contrast: str = _field("1.0", "animation: each moved frame's difference from its mean colour scaled by this before it is optimised or sampled (above 1: more contrast, against the greying of long animations; Deforum's contrast_schedule scales the pixels, brightness too)" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    fps: float | None = _field(None, "frames a second of the run's video (default: a restyled video's own; an animation's 12; else 10)", ANIMATION)  # fmt: skip
    zoom: str = _field("1.0", "2D: each frame this many times larger about the centre" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    angle: str = _field("0", "2D: each frame turned this many degrees anticlockwise" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    translation_x: str = _field("0", "2D: the picture moves this many pixels right each frame; 3D: the camera moves right (the scene left), 1/200 of a depth unit per unit" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    translation_y: str = _field("0", "2D: pixels down; 3D: the camera moves down" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    translation_z: str = _field("0", "3D: the camera moves forward, into the scene" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    rotation_3d_x: str = _field("0", "3D: the camera tilts, degrees per frame (positive: the view turns up)" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    rotation_3d_y: str = _field("0", "3D: the camera pans, degrees per frame (positive: the view turns right)" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    rotation_3d_z: str = _field("0", "3D: the camera rolls, degrees per frame (positive: clockwise, the scene turns anticlockwise)" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    fov: str = _field("40", "3D: the camera's field of view across the shorter side, in degrees" + _SCHEDULE_HELP, ANIMATION)  # fmt: skip
    padding_mode: str = _field("reflection", "animation: what fills where the moved frame leaves the picture: reflection, border, zeros or wrap (what leaves one side comes in at the other)", ANIMATION)  # fmt: skip
    sampling_mode: str = _field("bilinear", "animation: resampling of the moved frame: bilinear, bicubic or nearest", ANIMATION)  # fmt: skip
    color_coherence: str = _field("none", 'animation: each frame starts from the moved one before it with its colours matched to frame 0\'s (each channel\'s histogram, in "rgb", "hsv" or "lab"; Deforum\'s color_coherence), against the drift of long animations; or "none"', ANIMATION)  # fmt: skip
    depth_model: str = _field("none", '3D: the depth estimator ("none": a plane facing the camera; a registry model, "depth-anything-v2-small" or "dpt-hybrid-midas", with vqclip[depth]; or an installed one, such as "shapes-depth")', ANIMATION)  # fmt: skip
    save_depth: bool = _field(False, "3D: write each frame's depth as frames/depth-NNNNNN.png", ANIMATION)  # fmt: skip
    ema: float = _field(0.0, "frames show an exponential moving average of the generator's parameters with this decay per step (e.g. 0.9), for zooms and stories that flicker; 0 = off", VIDEO)  # fmt: skip
    # -- device and run
    device: str = _field("auto", '"auto", "cpu", "cuda", "cuda:N" or "mps"', RUN)
    precision: str = _field("auto", '"auto": the fastest here, measured once and recorded; "fp32"; autocast "bf16"/"fp16"', RUN)  # fmt: skip
    precision_choice: str = _field("", "what auto measured when it picked the precision (recorded; not read)", RUN, flag=False)  # fmt: skip
    compile: bool = _field(False, "torch.compile decoder and CLIP (the first step compiles, slowly)", RUN)  # fmt: skip

    def __post_init__(self) -> None:
        for name in SCHEDULES:  # a number in a config file is a constant schedule
            value = getattr(self, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                object.__setattr__(self, name, repr(value))
        for name in ("noise_prompt_seeds", "noise_prompt_weights", "augments", "batch_prompts", "symmetry_at"):  # fmt: skip
            value = getattr(self, name)
            if value is None and name == "augments":  # the preset's
                continue
            if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
                raise ValueError(f"{name}: expected a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.prior in ("", "none"):  # the CLI's way to say no prior
            object.__setattr__(self, "prior", None)
        if isinstance(self.clip_model, list | tuple):  # several CLIPs: one string, as the CLI's
            object.__setattr__(self, "clip_model", " + ".join(map(str, self.clip_model)))
        self._check_types()
        self._check_sizes()
        self._check_choices()
        self._check_batch_prompts()
        self._check_prompts()
        self.term_weights()
        self.transform_args()
        self._check_composition()
        self._check_regions()
        self._check_video()
        self._check_cut_schedule()
        self._check_diffusion()
        self._check_animation()

    def _check_types(self) -> None:
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) and not (value is None and name in _OPTIONAL):
                raise ValueError(f"{name}: expected a string, got {value!r}")
            if isinstance(value, str):
                limits.check_text(value, name)
                if len(value) > _MAX_TEXT:
                    raise ValueError(f"{name}: {len(value)} characters; expected at most {_MAX_TEXT}")  # fmt: skip
        name = self.run_name
        if name is not None and (name in ("", ".", "..") or re.search(r"[/\\]", name)):
            raise ValueError(
                f"run_name: expected a plain folder name inside output_dir (no '/', '\\', "
                f"'.' or '..'), got {name!r}"
            )

    def _check_sizes(self) -> None:
        checks = {
            _positive_int: ("width", "height", "cutn", "display_frequency", "batch_size",
                            "latent_levels", "best_of", "pixel_scale", "cutn_batches",
                            "video_stride", "steps_per_frame", "cadence"),
            _positive_number: ("cut_pow", "step_size", "zoom_scale", "fps", "cut_ic_pow"),
            _finite_number: ("init_weight", "zoom_shift_x", "zoom_shift_y", "zoom_rotate"),
            _non_negative_number: ("soundtrack_offset", "smoothness", "prior_weight", "clip_guidance_scale",
                                   "tv_scale", "range_scale", "clamp_max", "cond_scale", "video_fps",
                                   "temporal_weight", "palette_weight", "saturation_weight",
                                   "contrast_weight", "flow_weight"),
            _non_negative_int: ("prior_ramp", "step_decay", "prompt_every", "zoom_every", "zoom_start",
                                "video_frames", "skip_timesteps", "max_frames", "prompt_blend",
                                "flow_long_term",
                                "first_frame_steps"),
        }  # fmt: skip
        optional = {f.name for f in fields(self) if f.default is None}  # None: the preset's
        for check, names in checks.items():
            for name in names:
                if getattr(self, name) is not None or name not in optional:
                    check(name, getattr(self, name))
        if (self.batch_size or 1) * (self.best_of or 1) > limits.MAX_IMAGES:
            raise ValueError(
                f"batch_size, best_of: {self.batch_size} x {self.best_of} images in one batch; "
                f"expected at most {limits.MAX_IMAGES}"
            )
        if self.cutn is not None and self.cutn_batches > self.cutn:
            raise ValueError(
                f"cutn_batches: {self.cutn_batches} batches of {self.cutn} cutouts would leave "
                f"some empty; expected 1 to {self.cutn}"
            )
        if self.zoom_start and not self.zoom_every:
            raise ValueError(
                f"zoom_start: {self.zoom_start} needs zoom_every > 0 (how often to zoom after it)"
            )
        if self.prior_weight and not self.prior:
            raise ValueError(
                f"prior_weight: {self.prior_weight!r} needs an image prior; set prior "
                "(a registry name such as 'shapes-prior', or a path), or prior_weight 0"
            )
        if self.max_iterations is not None and (
            not _is_int(self.max_iterations)
            or not (1 <= self.max_iterations <= limits.MAX_STEPS or self.max_iterations == -1)
        ):
            raise ValueError(
                f"max_iterations: expected a positive integer or -1 (at most {limits.MAX_STEPS}), "
                f"got {_shown(self.max_iterations)}"
            )
        if not _is_int(self.seed) or not -1 <= self.seed < 2**63:
            raise ValueError(
                f"seed: expected an integer in [0, 2**63) or -1, got {_shown(self.seed)}"
            )

    def _check_choices(self) -> None:
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile: expected true or false, got {self.compile!r}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("precision", self.precision, PRECISIONS)
        if self.start is not None:
            _choice("start", self.start, STARTS)
        _choice("generator", self.generator, GENERATORS)
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("cut_method", self.cut_method, CUT_METHODS)
        if not _is_int(self.upscale) or self.upscale not in SCALES:
            raise ValueError(f"upscale: expected one of {list(SCALES)}, got {self.upscale!r}")
        self.clip_models()  # raises ValueError naming a malformed entry
        for name in self.augments or ():
            _choice("augments", name, AUGMENTS)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ValueError(
                f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}"
            )

    def _check_batch_prompts(self) -> None:
        if not self.batch_prompts:
            return
        if self.prompts:
            raise ValueError(
                f"prompts: {self.prompts!r} and batch_prompts both given; batch_prompts holds "
                "the prompts of every image of the batch, so leave prompts empty"
            )
        for index, prompts in enumerate(self.batch_prompts):
            if not isinstance(prompts, str):
                raise ValueError(
                    f"batch_prompts: item {index} is {prompts!r}; expected a string of prompts "
                    "('text:weight | text', or a story 'a ^ b')"
                )
            if not split_prompts(prompts) and not (self.image_prompts or self.target_images):
                raise ValueError(f"batch_prompts: item {index} is empty; nothing to steer it")
        if self.batch_size not in (1, len(self.batch_prompts)):
            raise ValueError(
                f"batch_size: {self.batch_size} does not match the {len(self.batch_prompts)} "
                "batch_prompts (leave it at 1 and it follows them)"
            )
        object.__setattr__(self, "batch_size", len(self.batch_prompts))

    def _check_video(self) -> None:
        if self.flow_long_term and not self.flow_weight:
            raise ValueError(f"flow_long_term: {self.flow_long_term} frames back are pulled toward with flow_weight; give flow_weight too")  # fmt: skip
        if self.flow_long_term > 8:
            raise ValueError(f"flow_long_term: {self.flow_long_term}; expected 0 to 8 frames back")  # fmt: skip
        if not isinstance(self.flow_warp, bool):
            raise ValueError(f"flow_warp: expected true or false, got {self.flow_warp!r}")
        for name in ("frame_init_weight", "flow_blend"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name}: expected 0 to 1, got {value!r}")
        if not _is_number(self.ema) or not 0 <= self.ema < 1:
            raise ValueError(f"ema: expected a decay from 0 (off) up to, not including, 1; got {self.ema!r}")  # fmt: skip
        if not self.init_video:
            for name in ("video_fps", "frame_init_weight", "temporal_weight", "flow_warp", "flow_weight", "flow_long_term"):  # fmt: skip
                if getattr(self, name):
                    raise ValueError(
                        f"{name}: {getattr(self, name)!r} is for restyling a video; set init_video or leave it at 0"  # fmt: skip
                    )
            if self.video_stride != 1:
                raise ValueError(f"video_stride: {self.video_stride} is for restyling a video; set init_video or leave it at 1")  # fmt: skip
            return
        if self.video_fps and self.video_stride != 1:
            raise ValueError(
                f"video_fps: {self.video_fps} and video_stride {self.video_stride} both pick the "
                "frames; give one"
            )
        self._refuse_clashes(
            "init_image",
            "does not combine with init_video (each frame of the video is restyled by its own "
            "run of max_iterations steps)",
        )

    def _refuse_clashes(self, first: str, why: str) -> None:
        """A restyle and a diffusion sample each run once through their steps: no ``first``
        (the other one), zoom, story or endless run."""
        clashes = {
            first: getattr(self, first),
            "zoom_every": self.zoom_every,
            "prompts": self.phase_count() > 1 and not self._keyed_diffusion() and "phases ('^')",
            "max_iterations": self.max_iterations == -1 and -1,
        }
        for name, value in clashes.items():
            if value:
                raise ValueError(f"{name}: {value!r} {why}")

    def _check_diffusion(self) -> None:
        if self.generator != "diffusion":
            if self.skip_timesteps:
                raise ValueError(
                    f"skip_timesteps: {self.skip_timesteps} is for generator diffusion, not "
                    f"{self.generator!r}; leave it at 0"
                )
            return
        self._refuse_clashes(
            "init_video",
            "does not combine with generator diffusion (a sample follows its schedule from "
            "noise to image once); expected it unset",
        )
        if self.ema:
            raise ValueError(
                f"ema: {self.ema} averages an optimised generator's parameters; a diffusion "
                "sample has none, so leave it at 0"
            )
        if self.skip_timesteps and not self.init_image:
            raise ValueError(
                f"skip_timesteps: {self.skip_timesteps} needs an init_image to start from "
                "(noised to the level of the first step taken)"
            )
        steps = self.max_iterations
        if steps is not None and self.skip_timesteps >= steps:
            raise ValueError(
                f"skip_timesteps: {self.skip_timesteps} of {steps} sampling steps leaves none; "
                f"expected 0 to {steps - 1}"
            )

    def _check_animation(self) -> None:
        _choice("animation_mode", self.animation_mode, ANIMATION_MODES)
        _choice("padding_mode", self.padding_mode, PADDINGS)
        _choice("sampling_mode", self.sampling_mode, SAMPLINGS)
        _choice("color_coherence", self.color_coherence, COHERENCES)
        if not isinstance(self.save_depth, bool):
            raise ValueError(f"save_depth: expected true or false, got {self.save_depth!r}")
        for name in SCHEDULES:
            parse_schedule(getattr(self, name), name)
        if self.animation_mode == "none":
            if any(is_keyed(p) for p in (self.prompts, *self.batch_prompts)):
                raise ValueError("prompts: prompts keyed by frame need animation_mode 2D or 3D (a still's phases: \"a ^ b\")")  # fmt: skip
            for name, default in (("max_frames", 0), ("cadence", 1), ("prompt_blend", 0), ("color_coherence", "none")):  # fmt: skip
                if getattr(self, name) != default:
                    raise ValueError(f"{name}: {getattr(self, name)} is for an animation; give animation_mode 2D or 3D")  # fmt: skip
            return
        if self.max_frames < 1:
            raise ValueError(f"max_frames: an animation needs at least 1 frame, got {self.max_frames}")  # fmt: skip
        if self.prompt_blend and not is_keyed(self.prompts):
            raise ValueError(f"prompt_blend: {self.prompt_blend} frames blend prompts keyed by frame; give prompts such as \"0: a forest | 50: a city\"")  # fmt: skip
        if self.cadence > MAX_CADENCE:
            raise ValueError(f"cadence: {self.cadence}; expected 1 to {MAX_CADENCE}")
        if self.generator == "diffusion":  # each frame a sample over max_iterations steps
            if self.max_frames > MAX_FRAMES:  # before the schedules are walked frame by frame
                raise ValueError(f"max_frames: {self.max_frames}; expected at most {MAX_FRAMES}")  # fmt: skip
            self._check_schedule_values()
            for name, value in (("zoom_every", self.zoom_every), ("batch_prompts", bool(self.batch_prompts) and "a batch")):  # fmt: skip
                if value:
                    raise ValueError(f"{name}: {value!r} does not combine with animation_mode {self.animation_mode!r} yet")  # fmt: skip
            if self.best_of is None:  # one image moves from frame to frame
                object.__setattr__(self, "best_of", 1)
            return
        if self.max_frames > MAX_FRAMES or self.max_frames * self.steps_per_frame > limits.MAX_STEPS:  # fmt: skip
            raise ValueError(f"max_frames: {self.max_frames} frames of {self.steps_per_frame} steps; expected at most {MAX_FRAMES} frames and {limits.MAX_STEPS} steps in all")  # fmt: skip
        if self.cadence > self.steps_per_frame:  # the frames between are named by the steps between
            raise ValueError(f"cadence: {self.cadence} is more than steps_per_frame ({self.steps_per_frame}); expected at most that many")  # fmt: skip
        self._check_schedule_values()
        first, every = self.first_steps(), self.steps_per_frame
        if self.max_iterations is None:  # the preset's would not fit the frames
            keys = -(-self.max_frames // self.cadence)  # the frames that take steps
            object.__setattr__(self, "max_iterations", first + (keys - 1) * every)
        if self.best_of is None:  # one image moves from frame to frame
            object.__setattr__(self, "best_of", 1)
        if self.max_iterations < first or (self.max_iterations - first) % every:
            raise ValueError(
                f"max_iterations: {self.max_iterations} is not a first frame of {first} steps "
                f"and whole frames of {every}; leave it unset (it follows max_frames)"
            )
        for name, value in (("zoom_every", self.zoom_every), ("init_video", self.init_video),
                            ("batch_prompts", bool(self.batch_prompts) and "a batch")):  # fmt: skip
            if value:
                raise ValueError(f"{name}: {value!r} does not combine with animation_mode {self.animation_mode!r} yet")  # fmt: skip

    def _check_schedule_values(self) -> None:
        """Every frame's value of every schedule, before any work: finite, a zoom above 0, a
        field of view inside (0, 180) degrees, a frame_strength from 0 up to 1, a frame_noise
        from 0 to 1, a frame_contrast from 0 to 10; one line naming the setting and the frame."""
        for name in SCHEDULES:
            _check_schedule(name, getattr(self, name), self.max_frames, max(self.seed, 0))

    def step_size_at(self, iteration: int) -> float:
        """The step size of step ``iteration``: ``step_size``, falling linearly over the last
        ``step_decay`` steps before the run's end (an animation frame's) to a tenth at the last."""
        if self.animation_mode != "none":  # the first step of the next frame that takes steps
            end = self.frame_start(self.frame_at(iteration) + self.cadence)
        else:
            end = self.max_iterations
        left = end - iteration  # 1 at the last step
        if not self.step_decay or end == -1 or left > self.step_decay:
            return self.step_size
        return self.step_size * (0.1 + 0.9 * (left - 1) / self.step_decay)

    def first_steps(self) -> int:
        """An animation's first frame's steps."""
        return self.first_frame_steps or self.steps_per_frame

    def frame_ended(self, steps: int) -> int | None:
        """The animation frame whose last step is step ``steps`` - 1 (None: no frame ends).
        With ``cadence`` N only every Nth frame takes steps."""
        past = steps - self.first_steps()
        if self.animation_mode == "none" or past < 0 or past % self.steps_per_frame:
            return None
        return past // self.steps_per_frame * self.cadence

    def frame_at(self, iteration: int) -> int:
        """The animation frame that step ``iteration`` makes (every ``cadence``th takes steps)."""
        first = self.first_steps()
        return 0 if iteration < first else ((iteration - first) // self.steps_per_frame + 1) * self.cadence  # fmt: skip

    def frame_start(self, frame: int) -> int:
        """The first step of the first frame at or after ``frame`` that takes steps."""
        key = -(-frame // self.cadence)
        return 0 if key == 0 else self.first_steps() + (key - 1) * self.steps_per_frame

    def schedule(self, name: str) -> Schedule:
        """The parsed schedule of the setting ``name`` (one of :data:`SCHEDULES`)."""
        return parse_schedule(getattr(self, name), name)

    def schedule_at(self, name: str, frame: int) -> float:
        """The value at animation frame ``frame`` of the schedule ``name`` (``max_f``: the
        run's frames; ``s``: its seed)."""
        return self.schedule(name).at(frame, self.max_frames, max(self.seed, 0))

    def steps(self) -> int:
        """The steps a run takes (per frame of a restyle): ``max_iterations``, less the steps a
        diffusion sample skips; -1 for a run until interrupted."""
        return self.max_iterations - self.skip_timesteps

    def clip_models(self) -> list[tuple[str, float]]:
        """The CLIP models that guide the run, each with its weight (see
        :func:`parse_clip_models`)."""
        return parse_clip_models(self.clip_model)

    def stories(self) -> list[list[str]]:
        """Each image's prompt phases (``"a ^ b"`` -> ``["a", "b"]``): one list per item of
        ``batch_prompts``, or the one list of ``prompts`` that every image shares."""
        return [split_phases(prompts) for prompts in self.batch_prompts or (self.prompts,)]

    def _check_cut_schedule(self) -> None:
        if not (self.cut_overview or self.cut_innercut):
            if self.cut_icgray_p:
                raise ValueError("cut_icgray_p: is for a cut schedule; give cut_overview and cut_innercut too")  # fmt: skip
            return
        if not (self.cut_overview and self.cut_innercut):
            raise ValueError("cut_overview, cut_innercut: give both (Disco's cut schedule), or neither (cutn)")  # fmt: skip
        if self.cut_method != "crops":
            raise ValueError(f"cut_method: {self.cut_method!r} does not combine with a cut schedule (its inner cuts are crops)")  # fmt: skip
        for name in ("cut_overview", "cut_innercut"):
            values = parse_step_list(getattr(self, name), name)
            if not all(x == int(x) and 0 <= x <= limits.MAX_CUTN for x in values):
                raise ValueError(f"{name}: expected whole numbers from 0 to {limits.MAX_CUTN}")
        grey = parse_step_list(self.cut_icgray_p or "0", "cut_icgray_p")
        if not all(0 <= x <= 1 for x in grey):
            raise ValueError("cut_icgray_p: expected shares from 0 to 1")
        if self.max_iterations == -1:
            raise ValueError("cut_overview, cut_innercut: a cut schedule is spread over max_iterations; give a number of steps, not -1")  # fmt: skip
        for step in self.cut_changes():
            if sum(self.cuts_at(step)[:2]) == 0:
                raise ValueError(f"cut_overview, cut_innercut: no cuts at step {step}; expected at least one at every step")  # fmt: skip

    def cuts_at(self, step: int) -> tuple[int, int, float]:
        """A cut schedule's (overview views, inner crops, their grey share) at ``step``."""
        steps = max(self.max_iterations or 1, 1)
        overview, inner = (
            int(step_value(parse_step_list(getattr(self, name), name), step, steps))
            for name in ("cut_overview", "cut_innercut")
        )
        grey = step_value(parse_step_list(self.cut_icgray_p or "0", "cut_icgray_p"), step, steps)
        return overview, inner, grey

    def cut_changes(self) -> list[int]:
        """The steps at which a cut schedule's entries may change (0 first; [] without one)."""
        if not self.cut_overview:
            return []
        steps = max(self.max_iterations or 1, 1)
        starts = {0}
        for name in ("cut_overview", "cut_innercut", "cut_icgray_p"):
            count = len(parse_step_list(getattr(self, name) or "0", name))
            starts |= {-(-index * steps // count) for index in range(count)}
        return sorted(start for start in starts if start < steps)

    def _keyed_diffusion(self) -> bool:
        """Whether a diffusion animation's prompts change at frames (each frame a sample)."""
        return self.generator == "diffusion" and self.animation_mode != "none" and is_keyed(self.prompts)  # fmt: skip

    def frame_skip(self, frame: int) -> int:
        """The sampling steps that frame ``frame`` (after the first) of a diffusion animation
        skips: its ``frame_strength`` of the schedule."""
        strength = self.schedule_at("frame_strength", frame)
        return min(round(strength * self.max_iterations), self.max_iterations - 1)

    def prompt_at(self, frame: int) -> tuple[int, tuple[int, float] | None]:
        """The keyed prompt phase in force at animation frame ``frame``, and, within
        ``prompt_blend`` frames of its key, the phase before it and this one's share."""
        keys = [key for key, _ in split_keyed(self.prompts)] if is_keyed(self.prompts) else [0]
        phase = bisect.bisect_right(keys, frame) - 1
        since = frame - keys[phase]
        if phase == 0 or since >= self.prompt_blend:
            return phase, None
        return phase, (phase - 1, (since + 1) / (self.prompt_blend + 1))

    def symmetry_steps(self) -> Callable[[int], bool] | None:
        """At which steps symmetry holds (None: at every one): before ``symmetry_share`` of
        them, or at the steps ``symmetry_at`` names (of a sample's, its skipped ones left out,
        as Disco counts them)."""
        if self.symmetry_at:
            steps = self.max_iterations - self.skip_timesteps
            return frozenset(min(int(share * steps), steps - 1) for share in self.symmetry_at).__contains__  # fmt: skip
        if self.symmetry_share >= 1:
            return None
        until = math.ceil(self.symmetry_share * self.max_iterations)
        return lambda step: step < until

    def follows_flow(self) -> bool:
        """Whether a restyle warps the previous result along the source's optical flow."""
        return bool(self.flow_warp or self.flow_weight)

    def has_regions(self) -> bool:
        """Whether a prompt (of any phase, or an image prompt) names where it applies."""
        texts = [phase for story in self.stories() for phase in story] + [self.image_prompts]
        return any(p.region for text in texts for p in parse_prompts(text))

    def _check_regions(self) -> None:
        """Region prompts score their own cutouts: in one batch of them, for one story."""
        if not self.has_regions():
            return
        for name, value in (("cutn_batches", self.cutn_batches > 1 and self.cutn_batches),
                            ("batch_prompts", bool(self.batch_prompts) and "a batch")):  # fmt: skip
            if value:
                raise ValueError(f"{name}: {value!r} does not combine with prompts in regions (@left, @mask.png) yet")  # fmt: skip

    def _check_composition(self) -> None:
        _choice("symmetry", self.symmetry, SYMMETRIES)
        sized = self.width is not None and self.height is not None  # else the preset's, later
        square = self.symmetry in ("rotate4", "kaleidoscope", "p4g")
        if square and sized and (self.width != self.height or self.width % 2):
            raise ValueError(f"symmetry: {self.symmetry!r} turns a square into itself; expected width equal to height and even, got {self.width}x{self.height}")  # fmt: skip
        if self.symmetry in ("glide", "pmg") and sized and self.width % 2:
            raise ValueError(f"symmetry: {self.symmetry!r} shifts the image by half its width; expected an even width, got {self.width}")  # fmt: skip
        if self.symmetry in WALLPAPERS and self.generator == "diffusion":  # it averages the image
            raise ValueError(f"symmetry: {self.symmetry!r} averages the image over its group, which would also average away the sampler's noise; expected generator vqgan or pixels (or a symmetry that copies: horizontal, vertical, both, rotate2, rotate4, glide, kaleidoscope)")  # fmt: skip
        if self.symmetry in HEXAGONAL and sized:
            short, long = sorted((self.width, self.height))
            if self.width % 2 or self.height % 2 or abs(long / short / 3**0.5 - 1) > 0.03:
                raise ValueError(f"symmetry: {self.symmetry!r} tiles a hexagonal lattice, whose tile has its long side √3 (1.73) times its short one; expected both even and within 3% of that ratio, such as 64x112, 128x224 or 256x448 (either way round), got {self.width}x{self.height}")  # fmt: skip
        if self.symmetry in ("cm", "pgg", "cmm") and sized and (self.width % 2 or self.height % 2):
            raise ValueError(f"symmetry: {self.symmetry!r} shifts the image by half its width and height; expected both even, got {self.width}x{self.height}")  # fmt: skip
        if not _is_number(self.symmetry_share) or not 0 < self.symmetry_share <= 1:
            raise ValueError(f"symmetry_share: expected a share above 0, at most 1; got {self.symmetry_share!r}")  # fmt: skip
        if self.symmetry_share < 1 and (self.symmetry == "none" or self.max_iterations == -1):
            raise ValueError("symmetry_share: is a share of a symmetric run's steps; give symmetry and a number of max_iterations")  # fmt: skip
        if self.symmetry_at:
            if any(not _is_number(share) or not 0 <= share < 1 for share in self.symmetry_at):
                raise ValueError(f"symmetry_at: expected shares of the steps from 0, below 1 (such as 0.09); got {_shown(list(self.symmetry_at))}")  # fmt: skip
            if self.generator != "diffusion" or self.symmetry == "none" or self.symmetry_share < 1:
                raise ValueError("symmetry_at: makes a diffusion sample symmetric at single steps; give generator diffusion and a symmetry, without symmetry_share (an optimised image keeps nothing of a single step's symmetry: use symmetry_share)")  # fmt: skip
        if not isinstance(self.tile, bool):
            raise ValueError(f"tile: expected true or false, got {self.tile!r}")
        self.palette_colors()

    def palette_colors(self) -> tuple[tuple[float, float, float], ...]:
        """``palette`` as RGB colours in [0, 1]."""
        colors = []
        for item in (i.strip() for i in self.palette.split(",") if i.strip()):
            name = item.lower()
            if name in COLOR_NAMES:
                rgb = COLOR_NAMES[name]
            elif re.fullmatch(r"#[0-9a-f]{6}", name):
                rgb = tuple(int(name[i : i + 2], 16) for i in (1, 3, 5))
            elif re.fullmatch(r"#[0-9a-f]{3}", name):
                rgb = tuple(17 * int(c, 16) for c in name[1:])
            else:
                raise ValueError(f"palette: {item[:40]!r}; expected a colour name ({', '.join(sorted(COLOR_NAMES))}) or hex #rrggbb")  # fmt: skip
            colors.append(tuple(c / 255 for c in rgb))
            if len(colors) > limits.MAX_PROMPTS:
                raise ValueError(f"palette: more than {limits.MAX_PROMPTS} colours")
        return tuple(colors)

    def term_weights(self) -> tuple[tuple[str, float], ...]:
        """``terms`` as (name, weight) pairs, in order."""
        pairs = []
        for name, weight in _named_list("terms", self.terms):
            try:
                number = float(weight)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ValueError(f"terms: {name}:{weight!r}; expected NAME:WEIGHT, a finite number")  # fmt: skip
            pairs.append((name, number))
        return tuple(pairs)

    def transform_args(self) -> tuple[tuple[str, str], ...]:
        """``transforms`` as (name, argument) pairs, in order; "" where none is given."""
        return _named_list("transforms", self.transforms)

    def phase_count(self) -> int:
        """How many prompt phases the run has; an image whose story is shorter keeps its last."""
        return max(len(phases) for phases in self.stories())

    def _check_counts(self) -> None:
        """Bounded before anything is split further or embedded."""
        for name in ("prompts", "image_prompts", "target_images", *(("batch_prompts",) * bool(self.batch_prompts))):  # fmt: skip
            for text in getattr(self, name) if name == "batch_prompts" else (getattr(self, name),):
                count = text.count("|") + text.count("^") + 1 if isinstance(text, str) else 0
                if count > limits.MAX_PROMPTS:
                    raise ValueError(
                        f"{name}: {count} prompts; expected at most "
                        f"{limits.MAX_PROMPTS} (joined by '|', phases by '^')"
                    )
        for name in ("batch_prompts", "noise_prompt_seeds", "noise_prompt_weights", "augments", "symmetry_at"):  # fmt: skip
            count = len(getattr(self, name) or ())
            if count > limits.MAX_PROMPTS:
                raise ValueError(f"{name}: {count} items; expected at most {limits.MAX_PROMPTS}")

    def _check_prompts(self) -> None:
        self._check_counts()
        for phases in self.stories():
            for phase in phases:
                parse_prompts(phase)  # raises ValueError naming a malformed prompt
        if self.phase_count() > 1 and self.max_iterations == -1 and not self.prompt_every:
            raise ValueError(
                f"prompt_every: the prompts have {self.phase_count()} phases and max_iterations "
                "is -1 (until interrupted), so give the iterations per phase (prompt_every > 0)"
            )
        parse_prompts(self.image_prompts)
        if len(self.noise_prompt_seeds) != len(self.noise_prompt_weights):
            raise ValueError(
                "noise_prompt_seeds and noise_prompt_weights: expected the same length, got "
                f"{len(self.noise_prompt_seeds)} and {len(self.noise_prompt_weights)}"
            )
        for seed in self.noise_prompt_seeds:
            if not _is_int(seed) or not 0 <= seed < 2**63:
                raise ValueError(f"noise_prompt_seeds: expected integers >= 0, got {seed!r}")
        for weight in self.noise_prompt_weights:
            _finite_number("noise_prompt_weights", weight)
        steer = (self.prompts, self.image_prompts, self.noise_prompt_seeds, self.target_images)
        steer += (self.batch_prompts,)
        if not any(split_prompts(s) if isinstance(s, str) else s for s in steer):
            raise ValueError(
                "prompts: nothing to steer toward; give prompts, image_prompts, "
                "target_images or noise_prompt_seeds"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        """The config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerationConfig:
        """Build a config from a dict; unknown keys are an error that lists the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(map(repr, set(values) - known))
        if unknown:
            raise ValueError(f"unknown config keys [{', '.join(unknown)[:300]}]; valid keys are {sorted(known)}")  # fmt: skip
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, field: str = "config") -> GenerationConfig:
        """Parse a config saved by :meth:`to_json` (within :mod:`vqclip.core.limits`' bounds)."""
        values = limits.parse_json(text, field)
        if not isinstance(values, dict):
            raise ValueError(f"{field}: holds {type(values).__name__}, expected an object")
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> GenerationConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def parse_clip_models(text: str) -> list[tuple[str, float]]:
    """``"ViT-B/32 + RN50:0.5"`` -> ``[("ViT-B/32", 1.0), ("RN50", 0.5)]``: models joined by
    ``+``, each with an optional ``:weight`` (>= 0; default 1), read from the right so that
    names with colons (``open_clip:ViT-B-32/laion2b_s34b_b79k``) survive."""
    models = []
    for entry in text.split("+"):
        name, _, suffix = entry.strip().rpartition(":")
        weight = _weight(suffix) if name else None
        name, weight = (name.strip(), weight) if weight is not None else (entry.strip(), 1.0)
        if not name or not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"clip_model: {entry.strip()!r} in {text!r}; expected 'name' or 'name:weight' "
                "with a weight >= 0, entries joined by '+' (e.g. 'ViT-B/32 + RN50:0.5')"
            )
        models.append((name, weight))
    if not any(weight for _, weight in models):
        raise ValueError(f"clip_model: every weight in {text!r} is 0; expected one above 0")
    return models


def _weight(text: str) -> float | None:
    """A ``:weight`` suffix as a number, or None when it is part of the name."""
    try:
        return float(text)
    except ValueError:
        return None


def resolve_seed(config: GenerationConfig) -> GenerationConfig:
    """Pick a seed for ``seed=-1`` (from the OS, not a global RNG); other configs pass through."""
    if config.seed != -1:
        return config
    return config.replace(seed=secrets.randbelow(2**31))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value for an error line: a huge integer in short."""
    if _is_int(value) and abs(value) >= 10**20:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)[:80]


@functools.lru_cache(maxsize=256)
def _check_schedule(name: str, text: str, frames: int, seed: int) -> None:
    """Raise ``ValueError`` at the first frame where a schedule's value is out of its range;
    remembered, since a config is made again at each ``replace`` and the walk is per frame."""
    schedule = parse_schedule(text, name)
    low, high = {"zoom": (0, math.inf), "fov": (0, 180)}.get(name, (-math.inf, math.inf))
    for frame in range(1, 2 if schedule.constant else frames + 1):
        value = schedule.at(frame, frames, seed)
        if name == "frame_noise" and not 0 <= value <= 1:
            raise ValueError(f"frame_noise: {value:g} at frame {frame}; expected from 0 to 1 (a standard deviation in half a pixel's range)")  # fmt: skip
        if name == "frame_contrast" and not 0 <= value <= 10:
            raise ValueError(f"frame_contrast: {value:g} at frame {frame}; expected from 0 to 10 (1: as it is)")  # fmt: skip
        if name == "frame_strength" and not 0 <= value < 1:  # a share of the sampling steps
            raise ValueError(f"frame_strength: {value:g} at frame {frame}; expected a share from 0 up to, not including, 1")  # fmt: skip
        if not low < value < high:
            raise ValueError(f"{name}: {value:g} at frame {frame}; expected above {low}" + (f" and below {high}" if high < math.inf else ""))  # fmt: skip


_PLUGIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _named_list(field: str, text: str) -> tuple[tuple[str, str], ...]:
    """ "name, name:arg" -> ((name, ""), (name, arg)): the names a plugin registers, checked
    for form here and against what is registered when the run is built."""
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    if len(items) > limits.MAX_PROMPTS:
        raise ValueError(f"{field}: {len(items)} items; expected at most {limits.MAX_PROMPTS}")
    pairs = []
    for item in items:
        name, _, arg = item.partition(":")
        if not _PLUGIN_NAME.match(name.strip()):
            raise ValueError(f"{field}: {item!r}; expected NAME or NAME:ARG, NAME in lower-case letters, digits, '-', '_', '.'")  # fmt: skip
        pairs.append((name.strip(), arg.strip()))
    return tuple(pairs)


def _check_int(name: str, value: Any, low: int, expected: str) -> None:
    top = _MAXIMA.get(name, limits.MAX_STEPS)
    if not _is_int(value) or value < low:
        raise ValueError(f"{name}: expected {expected}, got {_shown(value)}")
    if value > top:
        raise ValueError(f"{name}: {_shown(value)} is over {top}; expected at most {top}")


def _check_number(name: str, value: Any, low: float | None, expected: str) -> None:
    """A finite number, at least ``low`` (above it when ``low`` is 0 and ``expected`` says
    positive), within :data:`limits.MAX_MAGNITUDE` (an int beyond a float's range is not)."""
    if not _is_number(value) or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{name}: expected {expected}, got {_shown(value)}")
    if low is not None and (value < low or (value == low and "positive" in expected)):
        raise ValueError(f"{name}: expected {expected}, got {_shown(value)}")
    if abs(value) > limits.MAX_MAGNITUDE:
        raise ValueError(f"{name}: {_shown(value)} is beyond ±{limits.MAX_MAGNITUDE:g}; expected {expected}")  # fmt: skip


def _non_negative_int(name: str, value: Any) -> None:
    _check_int(name, value, 0, "an integer >= 0")


def _positive_int(name: str, value: Any) -> None:
    _check_int(name, value, 1, "a positive integer")


def _positive_number(name: str, value: Any) -> None:
    _check_number(name, value, 0, "a positive number")


def _non_negative_number(name: str, value: Any) -> None:
    _check_number(name, value, 0, "a number >= 0")


def _finite_number(name: str, value: Any) -> None:
    _check_number(name, value, None, "a finite number")


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name}: unknown value {value!r}; valid options are {list(options)}")
