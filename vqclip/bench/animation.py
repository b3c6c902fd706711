"""``vqclip bench --animation``: seconds per animation frame.

Two measures. The shapes world's animations as a user runs them (2D, and 3D through the shapes
depth estimator), timed between frames by the run's own reports. And, for the real
architectures with random weights (VQGAN imagenet f16-16384, CLIP ViT-B/32, and with
transformers the depth models Depth-Anything-V2-Small and DPT-Hybrid), what one frame costs:
the move (depth, warp, encoding the moved frame) plus ``steps_per_frame`` loop steps.
"""

from __future__ import annotations

import functools
import importlib.util
import statistics
import tempfile
import time
from typing import Any

import torch

from vqclip.bench.loops import AUGMENTS, F16_16384, VIT_B_32, _targets, _time
from vqclip.core import plugins
from vqclip.core.config import GenerationConfig
from vqclip.loop.cutouts import make_augments
from vqclip.loop.generators import VQGANGenerator
from vqclip.loop.latents import random_latent
from vqclip.loop.objective import Objective, PromptTerm
from vqclip.loop.optimise import Cuts, Loop, start_state, step
from vqclip.loop.perceptors import Perceptor
from vqclip.models.vqgan_clip import build_clip, build_vqgan, prepare_for_loop
from vqclip.run.build import resolve_device
from vqclip.run.driver import generate
from vqclip.run.motion import normalised_depth, warp_3d

__all__ = ["run_animation_benchmark", "format_animation_table", "STEPS_PER_FRAME"]

STEPS_PER_FRAME = 10


def _shapes_frames(mode: str, frames: int, device: str) -> float:
    """Median seconds between the frame ends of a shapes-world animation (the first frame's
    steps and the models' loading left out)."""
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = GenerationConfig(
            prompts="a red circle on a blue background", animation_mode=mode, max_frames=frames,
            steps_per_frame=STEPS_PER_FRAME, translation_z="10" if mode == "3D" else "0",
            translation_x="2", depth_model="shapes-depth" if mode == "3D" else "none",
            seed=0, device=device, precision="fp32", output_dir=tmp,
        )  # fmt: skip
        generate(config, lambda info: "image" in info and ends.append(time.perf_counter()))
    return statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))


def _depth_model(name: str, device: torch.device) -> Any:
    """The shapes world's depth estimator, or a real depth architecture with random weights."""
    if name == "shapes-depth":
        return plugins.estimators("depth")["shapes-depth"].load(device)
    from vqclip.models.depth import ARCHITECTURES, architecture, as_estimator

    model_class, config = architecture(name, {})
    return as_estimator(model_class(config), name, ARCHITECTURES[name]["size"], device)


def _real_frame(size: int, cutn: int, device: torch.device, precision: str, repeats: int, depth_name: str = "shapes-depth") -> dict[str, float]:  # fmt: skip
    """One frame of the real architectures: a 3D move (depth, warp, encoding) and the steps."""
    torch.manual_seed(0)
    vqgan = build_vqgan(F16_16384).eval().requires_grad_(False).to(device)
    clip_model = build_clip(**VIT_B_32).eval().requires_grad_(False).to(device)
    prepare_for_loop(vqgan, clip_model)
    perceptor = Perceptor(clip_model)
    objective = Objective(PromptTerm(targets=(_targets(perceptor, device),)))
    augments = make_augments(AUGMENTS, clip_model.visual.input_resolution)
    loop = Loop(VQGANGenerator(vqgan), (perceptor,), objective, Cuts((augments,), cutn), 0, precision)  # fmt: skip
    g = torch.Generator(device=device).manual_seed(0)
    cells = size // vqgan.spec.factor
    state = start_state(random_latent(vqgan.codebook, 1, cells, cells, g), "Adam", 0.1, g)
    depth = _depth_model(depth_name, device)

    def move() -> None:
        with torch.no_grad():
            image = loop.generator.decode(state.latent)
            moved = warp_3d(image, normalised_depth(depth(image)), (0, 0, 10), (0, 1, 0))
            loop.generator.encode(moved)

    move_s = _time(move, device, 1, repeats)
    step_s = _time(functools.partial(step, loop, state), device, 1, repeats)
    return {"move_s": move_s, "step_s": step_s, "frame_s": move_s + STEPS_PER_FRAME * step_s}


def run_animation_benchmark(quick: bool = False, device: str | None = None, precision: str = "fp32") -> dict[str, Any]:  # fmt: skip
    dev = resolve_device(device or "auto")
    precision = "fp32" if precision in (None, "auto") else precision
    frames = 3 if quick else 8
    rows = [
        {"case": f"shapes 64², {mode}", "frame_s": _shapes_frames(mode, frames, str(dev))}
        for mode in ("2D", "3D")
    ]
    if not quick:
        sizes = (256, 512) if dev.type == "cuda" else (256,)
        for size in sizes:
            row = _real_frame(size, 32, dev, precision, 3)
            rows.append({"case": f"f16-16384 + ViT-B/32 {size}², 3D, cutn 32", **row})
        # With a real depth model's architecture (random weights), where transformers is.
        for name in ("depth-anything", "dpt-hybrid") if importlib.util.find_spec("transformers") else ():  # fmt: skip
            row = _real_frame(sizes[-1], 32, dev, precision, 3, name)
            rows.append({"case": f"f16-16384 + ViT-B/32 {sizes[-1]}², 3D with {name}, cutn 32", **row})  # fmt: skip
    return {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads",  # fmt: skip
        "steps_per_frame": STEPS_PER_FRAME,
        "precision": precision,
        "rows": rows,
    }


def format_animation_table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['device']}, {results['steps_per_frame']} steps a frame, {results['precision']}",
        "| case | move s | step s | s per frame |",
        "|---|---|---|---|",
    ]
    for row in results["rows"]:
        move = f"{row['move_s']:.3f}" if "move_s" in row else "-"
        one = f"{row['step_s']:.3f}" if "step_s" in row else "-"
        lines.append(f"| {row['case']} | {move} | {one} | {row['frame_s']:.3f} |")
    return "\n".join(lines)
