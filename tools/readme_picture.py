"""Draw the README's picture: the demo's progression, frame by frame, and its final image.

    .venv/bin/python tools/readme_picture.py   # writes docs/images/demo.png

Runs the demo's generation (the shapes preset, seed 0) with a frame every 10 steps and tiles
the frames and the final image, each scaled up 3x, into one strip.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vqclip import GenerationConfig, generate

PROMPT = "a red circle on a blue background"
OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "demo.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = GenerationConfig(prompts=PROMPT, seed=0, display_frequency=10, output_dir=tmp)
        result = generate(config)
        tiles = [np.asarray(Image.open(p).convert("RGB")) for p in result.frames]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    image = Image.fromarray(strip)
    image = image.resize((image.width * 3, image.height * 3), Image.NEAREST)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    image.save(OUT, optimize=True)
    print(f"{OUT}: {len(tiles)} frames, iterations 0 to {result.config.max_iterations}")


if __name__ == "__main__":
    main()
