"""Whether ``flow_long_term`` holds a flow-following restyle nearer its first frame.

    python tools/flow_drift.py [SEED]

A white circle moving 3 px a frame over black for 10 frames (64², H.264), restyled with the
shapes models to "a green circle on a yellow background" (20 steps a frame, ``flow_warp``,
``flow_weight 100``), with ``flow_long_term`` 0, 2 and 4. Prints, for each: the mean change
between consecutive results along the source's true motion ("along", as in docs/video.md), and
each frame's change from the first frame moved by the true motion to it ("drift"), over the
pixels both show, in 8-bit levels. A measurement for docs/video.md, not a test.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from vqclip.core.config import GenerationConfig
from vqclip.core.images import load_image
from vqclip.models.flow import warp
from vqclip.run.driver import generate
from vqclip.run.frames import frame_paths

STEP, FRAMES = 3, 10
_Y, _X = np.mgrid[:64, :64]


def inside(k: int) -> np.ndarray:
    return (_X - 18 - STEP * k) ** 2 + (_Y - 32) ** 2 < 12**2


def moved(image: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    """Frame ``k0``'s image moved by the source's true motion to frame ``k1``."""
    flow = torch.zeros(1, 2, 64, 64)
    flow[0, 0] = torch.from_numpy(inside(k1) * -float(STEP * (k1 - k0)))
    return warp(image, flow)


def measures(frames: list[Path]) -> tuple[float, list[float]]:
    pixels = [load_image(p) * 255 for p in frames]
    along, drift = [], []
    for k in range(1, len(pixels)):
        both = torch.from_numpy(~(inside(k - 1) & ~inside(k)))
        along.append((pixels[k] - moved(pixels[k - 1], k - 1, k)).abs().mean(1)[0][both].mean().item())  # fmt: skip
        seen = torch.from_numpy(~(inside(0) & ~inside(k)))
        drift.append((pixels[k] - moved(pixels[0], 0, k)).abs().mean(1)[0][seen].mean().item())
    return float(np.mean(along)), drift


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "circle.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(video), (64, 64), fps=8, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1
        )
        writer.send(None)
        for k in range(FRAMES):
            writer.send(np.repeat((inside(k) * 255).astype(np.uint8)[..., None], 3, axis=2))
        writer.close()
        base = GenerationConfig(
            prompts="a green circle on a yellow background", init_video=str(video), seed=seed,
            max_iterations=20, device="cpu", precision="fp32", output_dir=str(Path(tmp) / "runs"),
            flow_warp=True, flow_weight=100.0,
        )  # fmt: skip
        for back in (0, 2, 4):
            along, drift = measures(frame_paths(generate(base.replace(flow_long_term=back)).run_dir))  # fmt: skip
            print(f"seed {seed}, flow_long_term {back}: along {along:.2f}; drift by frame "
                  f"{[round(d, 1) for d in drift]}, mean {np.mean(drift):.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
