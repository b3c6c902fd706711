"""Measurements of the shapes world: the judge, CLIP's zero-shot accuracy, steering, success.

    python -m vqclip.shapes.evaluate [--seeds 2] [--prompts 24] [--precision fp32|bf16]
                                     [--latent-levels N] [--best-of N] [--prior-weight W]
                                     [--prior-ramp N]
                                     [--jobs 2]

prints every figure the README reports, as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vqclip.core import presets
from vqclip.core.config import GenerationConfig
from vqclip.core.images import to_uint8
from vqclip.loop.embeddings import embed_texts, similarity
from vqclip.loop.perceptors import Perceptor
from vqclip.shapes.data import COLORS, SHAPES, Scene, canonical_caption, render, sample_scenes
from vqclip.shapes.judge import judge

__all__ = [
    "judge_accuracy",
    "zero_shot_accuracy",
    "shape_preference",
    "PromptCase",
    "prompt_cases",
    "shapes_config",
    "run_cases",
    "worker_pool",
    "success_rates",
    "steering_rate",
    "split_pairs",
    "prompt_pairs",
]


def judge_accuracy(count: int = 200, seed: int = 7, size: int = 64) -> dict[str, float]:
    """The judge on freshly drawn data-set images (``size`` pixels square): the share judged
    right in colour, shape and background at once (``joint``), then colours and shapes alone."""
    scenes = sample_scenes(count, torch.Generator().manual_seed(seed))
    images = render(scenes, size)
    pairs = list(zip((judge(to_uint8(image)) for image in images), scenes, strict=True))
    return {
        "joint": sum(v.matches(s.color, s.shape, s.background) for v, s in pairs) / count,
        "colors": sum(v.color == s.color and v.background == s.background for v, s in pairs)
        / count,  # fmt: skip
        "shapes": sum(v.shape == s.shape for v, s in pairs) / count,
    }


@torch.no_grad()
def zero_shot_accuracy(
    clip_model: torch.nn.Module, count: int = 300, seed: int = 11
) -> dict[str, float]:
    """Pick the best canonical caption for held-out images; accuracy of each attribute."""
    perceptor = Perceptor(clip_model)
    grid = [(c, s, b) for c, s, b in itertools.product(COLORS, SHAPES, COLORS) if c != b]
    texts = embed_texts(perceptor, [canonical_caption(*g) for g in grid])  # (T, D)
    scenes = sample_scenes(count, torch.Generator().manual_seed(10_000 + seed))
    images = render(scenes).to(perceptor.device)
    embeds = torch.nn.functional.normalize(perceptor.encode_image(images), dim=-1)
    best = (embeds @ texts.T).argmax(1).tolist()
    picks = [grid[i] for i in best]
    n = len(scenes)
    return {
        "color": sum(p[0] == s.color for p, s in zip(picks, scenes, strict=True)) / n,
        "shape": sum(p[1] == s.shape for p, s in zip(picks, scenes, strict=True)) / n,
        "background": sum(p[2] == s.background for p, s in zip(picks, scenes, strict=True)) / n,
        "chance": {
            "color": 1 / len(COLORS),
            "shape": 1 / len(SHAPES),
            "background": 1 / len(COLORS),
        },
    }


def shape_preference(clip_model: torch.nn.Module, count: int = 24) -> dict[str, float]:
    """What the loop's CLIP objective says about shape: for each of ``count`` prompts and 4
    placements, true renderings of the prompt's colours in each of the three shapes; the share
    where the prompted shape is the most similar to the prompt (chance 1/3), and the median
    margin of its cosine similarity over the better of the other two."""
    placements = ((12, 32, 32), (18, 32, 32), (14, 24, 40), (20, 40, 30))  # radius, cx, cy
    margins = []
    for case in prompt_cases(count):
        scenes = [
            Scene(case.color, case.background, shape, cx, cy, radius)
            for radius, cx, cy in placements
            for shape in SHAPES
        ]
        scores = similarity(Perceptor(clip_model), render(scenes), [case.prompt]).view(
            -1, len(SHAPES)
        )
        right = SHAPES.index(case.shape)
        others = [i for i in range(len(SHAPES)) if i != right]
        margins.append(scores[:, right] - scores[:, others].max(1).values)
    margin = torch.cat(margins)
    return {
        "prefers_prompted": float((margin > 0).float().mean()),
        "median_margin": float(margin.median()),
    }


@dataclass(frozen=True)
class PromptCase:
    """A prompt and what it asks for."""

    prompt: str
    color: str
    shape: str
    background: str


_TEMPLATES = (
    "a {c} {s} on a {b} background",
    "a {b} background with a {c} {s}",
    "{c} {s}, {b} backdrop",
)


def prompt_pairs(count: int = 12) -> list[tuple[PromptCase, PromptCase]]:
    """``count`` pairs of prompts that differ only in the shape's colour; over the pairs every
    colour, shape, background and template appears."""
    colors = list(COLORS)
    pairs = []
    for i in range(count):
        background = colors[i % len(colors)]
        first = colors[(i + 1 + i // len(colors)) % len(colors)]
        second = colors[(i + 3 + i // len(colors)) % len(colors)]
        shape, template = SHAPES[i % len(SHAPES)], _TEMPLATES[(i // 2) % len(_TEMPLATES)]
        pairs.append(tuple(
            PromptCase(template.format(c=c, s=shape, b=background), c, shape, background)
            for c in (first, second)
        ))  # fmt: skip
    return pairs


def prompt_cases(count: int = 24) -> list[PromptCase]:
    """``count`` prompts (``count // 2`` colour pairs) over colours, shapes, backgrounds, templates."""
    return [case for pair in prompt_pairs(count // 2) for case in pair]


def shapes_config(
    prompt: str, seed: int, output_dir: str | Path, **changes: Any
) -> GenerationConfig:
    """The config the shapes-world measurements use for one generation: the shapes preset
    (for the generator in ``changes``, default the VQGAN), on the CPU."""
    values = {"prompts": prompt, "seed": seed, "output_dir": str(output_dir), "device": "cpu",
              "display_frequency": 20, **changes}  # fmt: skip
    return presets.apply(GenerationConfig(**values))


def run_cases(
    cases: list[PromptCase],
    seeds: list[int],
    output_dir: str | Path,
    jobs: int = 1,
    **changes: Any,
) -> list[dict[str, Any]]:
    """Generate every case with every seed and judge the final images, in order.

    With ``jobs > 1`` the runs go to :func:`worker_pool`'s processes of one thread each, so
    that a run's result does not depend on how many cores the machine has (thread counts change
    the order of floating-point sums); the shapes world's tensors are small, so two one-thread
    workers also do about 1.3x the work of one two-thread process on a 2-core machine.
    """
    work = [
        (case, seed, str(output_dir), changes) for case, seed in itertools.product(cases, seeds)
    ]
    if jobs <= 1:
        return [_run_case(*item) for item in work]
    try:
        return list(worker_pool(jobs).map(_run_case, *zip(*work, strict=True)))
    except BrokenProcessPool:  # a worker died (killed, out of memory): the next call starts anew
        _POOLS.pop(jobs).shutdown(wait=False)
        raise


_POOLS: dict[int, ProcessPoolExecutor] = {}


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes of one thread each, started on first use and kept
    until this process ends: later calls (the test suite's quality checks) find the workers
    started and their models loaded."""
    if jobs not in _POOLS:
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
        _POOLS[jobs] = ProcessPoolExecutor(
            jobs, context, initializer=torch.set_num_threads, initargs=(1,)
        )
    return _POOLS[jobs]


def _run_case(
    case: PromptCase, seed: int, output_dir: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """One generation, judged: a row of :func:`run_cases`."""
    from vqclip.run.driver import generate

    start = time.perf_counter()
    result = generate(shapes_config(case.prompt, seed, output_dir, **changes))
    pixels = to_uint8(result.image[0])
    verdict = judge(pixels)
    halves = (judge(pixels[:, : pixels.shape[1] // 2]), judge(pixels[:, pixels.shape[1] // 2 :]))
    return {
        "prompt": case.prompt, "seed": seed, "color": case.color, "shape": case.shape,
        "background": case.background, "judged_color": verdict.color,
        "judged_shape": verdict.shape, "judged_background": verdict.background,
        "top_two": sorted(verdict.top_two()), "shares": verdict.shares, "centre": verdict.centre,
        # each half judged as an image of its own (region prompts: a shape in each half)
        "halves": [(h.color, h.shape, h.background) for h in halves],
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def success_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of runs that succeed: the shape's colour, the shape and the background all right
    in the same image (``joint``, the figure reported first); then each alone: the two largest
    colours the prompted ones (``colors``), in their roles (``roles``), the shape (``shapes``)."""
    n = len(rows)
    joint = sum(
        (r["judged_color"], r["judged_shape"], r["judged_background"])
        == (r["color"], r["shape"], r["background"])  # fmt: skip
        for r in rows
    )
    colors = sum(set(r["top_two"]) == {r["color"], r["background"]} for r in rows)
    roles = sum(
        r["judged_color"] == r["color"] and r["judged_background"] == r["background"] for r in rows
    )
    shapes = sum(r["judged_shape"] == r["shape"] for r in rows)
    return {
        "joint": joint / n,
        "colors": colors / n,
        "roles": roles / n,
        "shapes": shapes / n,
        "runs": n,
        "seconds_per_image": sum(r["seconds"] for r in rows) / n,
    }


def split_pairs(rows: list[dict[str, Any]], seeds: int) -> tuple[list[dict], list[dict]]:
    """Rows of :func:`run_cases` on :func:`prompt_cases` -> (first of each pair, second), by seed."""
    block = 2 * seeds  # per pair: the first prompt's seeds, then the second's
    firsts = [r for i, r in enumerate(rows) if i % block < seeds]
    seconds = [r for i, r in enumerate(rows) if i % block >= seeds]
    return firsts, seconds


STEER_MARGIN = 0.01  # share of the image (41 pixels at 64x64) a colour must cover more to win


def steering_rate(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> float:
    """Pairs differing only in the shape's colour: does each colour cover more of its own image,
    by at least :data:`STEER_MARGIN` (a difference of a few pixels is noise, not steering)?"""
    wins = [
        a["shares"][a["color"]] > b["shares"][a["color"]] + STEER_MARGIN
        for a, b in zip(rows_a, rows_b, strict=True)
    ]
    wins += [
        b["shares"][b["color"]] > a["shares"][b["color"]] + STEER_MARGIN
        for a, b in zip(rows_a, rows_b, strict=True)
    ]
    return sum(wins) / len(wins)


def image_size(text: str) -> tuple[int, int]:
    """``"128"`` or ``"128x96"`` -> (width, height)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected W or WxH in pixels, such as 128x96; got {text!r}"
        )
    return int(parts[0]), int(parts[-1])


def main(argv: list[str] | None = None) -> None:
    """Print the shapes world's figures as JSON."""
    import tempfile

    from vqclip.run.build import load_models, resolve_device

    parser = argparse.ArgumentParser(prog="python -m vqclip.shapes.evaluate", description=__doc__)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--size", type=image_size, help='"W" or "WxH" in pixels (default: the preset\'s)'
    )
    parser.add_argument("--generator", default="vqgan", choices=["vqgan", "pixels", "diffusion"])
    parser.add_argument(
        "--clip-model", default="shapes-clip", help='e.g. "shapes-clip + shapes-clip-vit:0.5"'
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for the runs")
    # Settings left out take the generator's preset.
    settings = (("latent-levels", int), ("best-of", int), ("prior-weight", float),
                ("prior-ramp", int), ("step-size", float), ("step-decay", int),
                ("max-iterations", int), ("cutn", int), ("clip-guidance-scale", float),
                ("tv-scale", float), ("range-scale", float), ("clamp-max", float), ("cond-scale", float),
                ("sampler", str))  # fmt: skip
    for name, kind in settings:
        parser.add_argument(f"--{name}", type=kind, help="default: the generator's preset")
    args = parser.parse_args(argv)
    changes = {"precision": args.precision, "generator": args.generator, "clip_model": args.clip_model}  # fmt: skip
    if args.size:
        changes.update(width=args.size[0], height=args.size[1])
    for name in (flag.replace("-", "_") for flag, _ in settings):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    config = shapes_config("x", 0, ".")
    _, (perceptor,) = load_models(config, resolve_device("cpu"))
    clip_model = perceptor.model
    figures: dict[str, Any] = {
        "judge": judge_accuracy(),
        "zero_shot": zero_shot_accuracy(clip_model),
        "shape_preference": shape_preference(clip_model),
    }
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_cases(
            prompt_cases(args.prompts), list(range(args.seeds)), tmp, args.jobs, **changes
        )
    figures["prompt_success"] = success_rates(rows)
    figures["steering"] = steering_rate(*split_pairs(rows, args.seeds))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
