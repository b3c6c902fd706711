"""How far a long animation's colours drift from frame 0, with and without ``color_coherence``.

    python tools/color_drift.py GENERATOR SEED [COHERENCE,...] [SETTING=VALUE ...]

"a red circle on a blue background" with the shapes models, 24 frames of a 2D animation
zooming 1.04 and turning 2 degrees a frame (the optimised generators: 30 steps for frame 0,
3 a frame after), for each ``color_coherence`` given (default none,lab). Prints each frame's
mean colour's distance from frame 0's in CIELAB (ΔE*ab of the means) at frames 8, 16 and 23,
and its mean over frames 1-23, and the spread of lightness (the standard deviation of L*) at
frame 23 over frame 0's. ``SETTING=VALUE``: settings for every run, such as
``frame_contrast=1.05``. A measurement for docs/animation.md, not a test.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from kornia.color import rgb_to_lab

from vqclip.core.config import GenerationConfig
from vqclip.core.images import load_image
from vqclip.run.driver import generate
from vqclip.run.frames import frame_paths


def main(generator: str, seed: int, coherences: list[str], settings: dict[str, str]) -> None:
    base = GenerationConfig(
        prompts="a red circle on a blue background", generator=generator, seed=seed,
        device="cpu", precision="fp32", animation_mode="2D", max_frames=24, zoom="1.04",
        angle="2", **settings,
    )  # fmt: skip
    if generator != "diffusion":
        base = base.replace(max_iterations=None, first_frame_steps=30, steps_per_frame=3)
    with tempfile.TemporaryDirectory() as out:
        for coherence in coherences:
            run = generate(base.replace(color_coherence=coherence, output_dir=out))
            labs = [rgb_to_lab(load_image(p)) for p in frame_paths(run.run_dir)]
            means = [lab.mean((2, 3))[0] for lab in labs]
            drift = [float((m - means[0]).norm()) for m in means]
            spread = float(labs[23][0, 0].std() / labs[0][0, 0].std())
            print(
                f"{generator} seed {seed} color_coherence {coherence} {settings or ''}: drift at frames 8/16/23 "
                f"{[round(drift[k], 1) for k in (8, 16, 23)]}, mean {sum(drift[1:]) / 23:.1f}; "
                f"lightness spread at 23 over 0: {spread:.2f}"
            )  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(2)
    settings = dict(arg.split("=", 1) for arg in sys.argv[4:])
    main(sys.argv[1], int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "none,lab").split(","), settings)  # fmt: skip
