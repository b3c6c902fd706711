"""The benchmark, a plugin: ``vqclip bench`` times vqclip's loop beside the classic one
(:mod:`vqclip.bench.loops`). Only its command is registered here, so that the CLI starts
without importing torch for it."""

from __future__ import annotations

import argparse
import json

from vqclip.core.plugins import Command, register_command

__all__ = ["register"]


def _configure(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--quick", action="store_true", help="tiny models, one repeat (smoke test)")
    bench.add_argument("--device", help="default: cuda if available, else cpu")
    bench.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="fast path autocast (default auto: the fastest here, measured once and cached)",
    )
    bench.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the VQGAN decoder and CLIP image tower (fast path)",
    )
    bench.add_argument(
        "--case", action="append", metavar="SIZExCUTN", help="e.g. 256x32 (repeatable)"
    )
    bench.add_argument(
        "--batches",
        action="store_true",
        help="instead: speed and peak memory for cutn 64 and 128 in 1, 2 and 4 cutn_batches, "
        "and for a two-CLIP ensemble",
    )
    bench.add_argument(
        "--scaling",
        action="store_true",
        help="instead: one image in 1 and 2 processes (torchrun, gloo) and a sweep of 4 on a "
        "local Ray instance of 1 and 2 CPUs, as wall time of each command",
    )
    bench.add_argument(
        "--animation",
        action="store_true",
        help="instead: seconds per animation frame: the shapes world's 2D and 3D animations, "
        "and a 3D frame (depth, warp, encoding, 10 steps) of the real architectures",
    )
    bench.add_argument(
        "--flow",
        action="store_true",
        help="instead: optical flow per pair of frames and per frame made in between, for dis, "
        "raft_small and raft_large at 256² and 512²",
    )
    bench.add_argument(
        "--diffusion",
        action="store_true",
        help="instead: one CLIP-guided sampling step of OpenAI's 256x256 U-Net with ViT-B/32, "
        "cutn 16 and 32",
    )


def _run(args: argparse.Namespace) -> None:
    from vqclip.bench.loops import format_table, run_benchmark

    if args.scaling:
        from vqclip.bench.scaling import format_scaling_table, run_scaling_benchmark

        results = run_scaling_benchmark(args.quick)
        print(json.dumps(results, indent=2) if args.json else format_scaling_table(results))
        return
    if args.animation:
        from vqclip.bench.animation import format_animation_table, run_animation_benchmark

        results = run_animation_benchmark(args.quick, args.device, args.precision)
        print(json.dumps(results, indent=2) if args.json else format_animation_table(results))
        return
    if args.flow:
        from vqclip.bench.flow import format_flow_table, run_flow_benchmark

        results = run_flow_benchmark(args.quick, args.device)
        print(json.dumps(results, indent=2) if args.json else format_flow_table(results))
        return
    if args.diffusion:
        from vqclip.bench.loops import format_diffusion_table, run_diffusion_benchmark

        results = run_diffusion_benchmark(args.quick, args.device, args.precision)
        print(json.dumps(results, indent=2) if args.json else format_diffusion_table(results))
        return
    if args.batches:
        from vqclip.bench.loops import format_batches_table, run_batches_benchmark

        results = run_batches_benchmark(args.quick, args.device, args.precision)
        print(json.dumps(results, indent=2) if args.json else format_batches_table(results))
        return
    cases = [tuple(int(v) for v in c.lower().split("x")) for c in args.case] if args.case else None
    results = run_benchmark(args.quick, args.device, args.precision, args.compile, cases)
    print(json.dumps(results, indent=2) if args.json else format_table(results))


def register() -> None:
    """Add ``vqclip bench``."""
    register_command(Command("bench", "time the loop against the classic one", _configure, _run))
