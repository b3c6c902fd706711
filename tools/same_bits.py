"""Run the CLI of a git revision and of the working tree on the same configs; compare pixels.

    .venv/bin/python tools/same_bits.py REV [--only NAME ...] [--new-args "--step_decay 0"]

Each config covers one feature (plain, init image, image and noise prompts, story, zoom, batch
of prompts, best_of, bf16, restyle of a short video, resume after an interrupt), then the
pixels generator and the diffusion sampler (each plain, from an init image, and resumed). Both sides run
in this venv, the revision from a git worktree on ``PYTHONPATH``; every final PNG's pixels are
compared (their text differs: a newer config records more fields). Prints a Markdown table and
exits 1 if any image differs. ``--new-args``: flags for the working tree's runs only, to pin a
setting added since REV (or a preset's new value) to what REV did.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red circle on a blue background"
SHORT = [
    "--max_iterations",
    "12",
    "--display_frequency",
    "4",
    "--best_of",
    "1",
    "--precision",
    "fp32",
]
DIFFUSION = [
    "--generator",
    "diffusion",
    "--diffusion_model",
    "shapes-diffusion",
    "--best_of",
    "1",
    "--precision",
    "fp32",
]
CONFIGS: dict[str, list[str]] = {
    "plain": [PROMPT, "--seed", "0", *SHORT],
    "init image": [PROMPT, "--seed", "1", "--init_image", "{init}", "--init_weight", "0.5", *SHORT],
    "image+noise prompts": [
        PROMPT, "--seed", "2", "--image_prompts", "{init}:0.5", "--noise_prompt_seeds", "3",
        "--noise_prompt_weights", "0.3", *SHORT,
    ],
    "story": [f"{PROMPT} ^ a green square on a white background", "--seed", "3", *SHORT],
    "zoom": [PROMPT, "--seed", "4", "--zoom_every", "4", "--zoom_scale", "1.1",
             "--zoom_rotate", "3", *SHORT],
    "batch of prompts": ["--batch_prompts", PROMPT, "a yellow triangle on a black background",
                         "--seed", "5", *SHORT],
    "best_of 2, random start": [PROMPT, "--seed", "6", *SHORT[:4], "--best_of", "2",
                                "--start", "random", "--precision", "fp32"],
    "bf16": [PROMPT, "--seed", "7", *SHORT, "--precision", "bf16"],
    "restyle a video": ["an oil painting of a circle", "--seed", "8", "--init_video", "{video}",
                        "--video_frames", "3", "--max_iterations", "3", "--display_frequency", "3",
                        "--best_of", "1", "--init_weight", "0.5", "--precision", "fp32"],
    "resume after an interrupt": [PROMPT, "--seed", "9", "--max_iterations", "60",
                                  "--display_frequency", "4", "--best_of", "1", "--precision", "fp32"],
    # The pixels generator (its shapes preset): plain, init image, and resumed.
    "pixels": [PROMPT, "--generator", "pixels", "--seed", "10", *SHORT],
    "pixels, init image": [PROMPT, "--generator", "pixels", "--seed", "11", "--init_image",
                           "{init}", "--init_weight", "0.3", *SHORT],
    "resume pixels": [PROMPT, "--generator", "pixels", "--seed", "12", "--max_iterations", "80",
                      "--display_frequency", "4", "--best_of", "1", "--precision", "fp32"],
    # The diffusion sampler (the shapes U-Net): DDPM, DDIM from an init image, and resumed.
    "diffusion ddpm": [PROMPT, *DIFFUSION, "--seed", "13", "--max_iterations", "8"],
    "diffusion ddim, init image": [PROMPT, *DIFFUSION, "--seed", "14", "--sampler", "ddim",
                                   "--max_iterations", "8", "--init_image", "{init}",
                                   "--skip_timesteps", "3"],
    "resume diffusion": [PROMPT, *DIFFUSION, "--seed", "15", "--max_iterations", "40",
                         "--display_frequency", "2"],
}  # fmt: skip


def vqclip(source: Path, args: list[str], out: Path, interrupt_after: float = 0) -> Path:
    """Run ``python -m vqclip generate ARGS`` from ``source``; returns the new run directory."""
    env = {**os.environ, "PYTHONPATH": str(source), "VQCLIP_HOME": str(out / "cache")}
    before = set(out.glob("run*/*"))
    command = [sys.executable, "-m", "vqclip", "generate", *args, "--output_dir", str(out / "run")]
    process = subprocess.Popen(
        command, env=env, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    if interrupt_after:  # once the run has saved a state (its first display step), or later
        deadline = time.monotonic() + 120

        def saved() -> bool:
            return any((d / "state.pt").exists() for d in set(out.glob("run*/*")) - before)

        while not saved() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(interrupt_after)
        process.send_signal(signal.SIGINT)
    if process.wait() not in (0, 130):
        raise SystemExit(f"{source}: vqclip generate {args} failed")
    (run_dir,) = set(out.glob("run*/*")) - before
    if interrupt_after:
        resume = [sys.executable, "-m", "vqclip", "resume", str(run_dir)]
        subprocess.run(resume, env=env, cwd=out, capture_output=True, check=True)
    return run_dir


def pixels_digest(run_dir: Path) -> str:
    """SHA-256 of every final PNG's pixels, in name order."""
    digest = hashlib.sha256()
    for path in sorted(run_dir.glob("final*.png")):
        digest.update(np.asarray(Image.open(path).convert("RGB")).tobytes())
    return digest.hexdigest()[:12]


def make_inputs(work: Path) -> dict[str, str]:
    """An init image and a three-frame video, made without vqclip."""
    import imageio.v3 as iio

    y, x = np.mgrid[0:64, 0:64]
    frames = [
        np.stack([(x * 4 + 20 * k) % 256, y * 4 % 256, ((x + y) * 2) % 256], -1).astype(np.uint8)
        for k in range(3)
    ]
    Image.fromarray(frames[0]).save(work / "init.png")
    iio.imwrite(work / "in.mp4", np.stack(frames), fps=5, codec="libx264", quality=10)
    return {"init": str(work / "init.png"), "video": str(work / "in.mp4")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare against, e.g. HEAD~3")
    parser.add_argument("--only", nargs="*", help="config names to run (default: all)")
    parser.add_argument("--new-args", default="", help="flags for the working tree's runs only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = work / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old),
                        args.rev], check=True)  # fmt: skip
        try:
            inputs = make_inputs(work)
            rows, same = [], True
            for name, template in CONFIGS.items():
                if args.only and name not in args.only:
                    continue
                config = [a.format(**inputs) for a in template]
                wait = 0.5 if name.startswith("resume") else 0  # Ctrl-C after a state, resume
                digests = []
                sides = (("old", old, config), ("new", ROOT, config + shlex.split(args.new_args)))
                for side, source, flags in sides:
                    (work / side).mkdir(exist_ok=True)
                    digests.append(pixels_digest(vqclip(source, flags, work / side, wait)))
                same &= digests[0] == digests[1]
                rows.append(
                    f"| {name} | {digests[0]} | {digests[1]} | {digests[0] == digests[1]} |"
                )
                print(rows[-1], flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)])
    print(f"\n| config | {args.rev} | working tree | same pixels |\n|---|---|---|---|")
    print("\n".join(rows))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
