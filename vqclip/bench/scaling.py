"""``vqclip bench --scaling``: one image in 1 and 2 processes (torchrun, gloo), and a sweep of
four images on a local Ray instance of 1 and 2 CPUs, each timed as a user runs it (the
commands' wall time, start-up and model loading included)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from vqclip.scale.cluster import stop_local_ray

__all__ = ["run_scaling_benchmark", "format_scaling_table"]

PROMPT = "a red circle on a blue background"


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ...: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def run_scaling_benchmark(quick: bool = False) -> dict[str, Any]:
    """Seconds for one shapes image (cutn 64, 30 steps; quick: 8 cutouts, 2 steps) in one
    process (2 threads, and 1 thread with the cutouts in 2 batches, which two processes match
    bit for bit) and in two processes of one thread; and for a sweep of 4 such images (quick:
    2) on a local Ray instance with 1 and 2 CPUs."""
    bin_dir = Path(sys.executable).parent
    steps, cutn = ("2", "8") if quick else ("30", "64")
    flags = [PROMPT, "--seed", "0", "--max_iterations", steps, "--cutn", cutn, "--precision", "fp32", "--device", "cpu"]  # fmt: skip
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        out = ["--output_dir", str(Path(root) / "out")]
        one = {**env, "OMP_NUM_THREADS": "1"}
        rows["1 process, 2 threads"] = _timed([str(bin_dir / "vqclip"), "generate", *flags, *out], env)  # fmt: skip
        rows["1 process, 1 thread, cutn_batches 2"] = _timed([str(bin_dir / "vqclip"), "generate", *flags, "--cutn_batches", "2", *out], one)  # fmt: skip
        torchrun = [str(bin_dir / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", "29533", "-m", "vqclip"]  # fmt: skip
        rows["torchrun, 2 processes of 1 thread"] = _timed([*torchrun, "generate", *flags, *out], one)  # fmt: skip
        settings = {"max_iterations": int(steps), "cutn": int(cutn), "precision": "fp32", "device": "cpu"}  # fmt: skip
        for cpus in (1, 2):
            seeds = [0, 1] if quick else [0, 1, 2, 3]
            spec = {"name": f"cpus{cpus}", "output_dir": root, "settings": settings, "prompts": [PROMPT], "seeds": seeds}  # fmt: skip
            (Path(root) / "sweep.yaml").write_text(yaml.safe_dump(spec))
            ray = str(bin_dir / "ray")
            temp = Path(root) / f"ray{cpus}"  # so that only this instance is stopped after
            subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", "6390", "--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)], env=env, check=True, capture_output=True)  # fmt: skip
            try:
                sweep = [str(bin_dir / "vqclip"), "sweep", str(Path(root) / "sweep.yaml"), "--address", "127.0.0.1:6390"]  # fmt: skip
                rows[f"sweep of {len(seeds)} images, Ray with {cpus} CPU(s)"] = _timed(sweep, env)
            finally:
                stop_local_ray(temp)
    return {"steps": int(steps), "cutn": int(cutn), "seconds": rows}


def format_scaling_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"shapes models, 64x64, {results['steps']} steps, cutn {results['cutn']}, fp32, CPU; wall time of each command",  # fmt: skip
        "",
        "| run | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in results["seconds"].items()]
    return "\n".join(lines)
