"""Shared fixtures: tiny real-architecture models saved in the real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.config import GenerationConfig

TINY_VQGAN = {
    "double_z": False, "z_channels": 32, "resolution": 32, "in_channels": 3, "out_ch": 3,
    "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip
TINY_CLIP = {
    "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64,
    "vision_patch_size": 8, "context_length": 16, "vocab_size": 49408,
    "transformer_width": 64, "transformer_heads": 1, "transformer_layers": 1,
}  # fmt: skip


def png_pixels(path: Path) -> np.ndarray:
    """A saved image's pixels, as written."""
    with Image.open(path) as image:
        return np.asarray(image)


def tiny_vqgan_spec(target: str = "taming.models.vqgan.VQModel"):
    from vqclip.models import VQGANSpec

    gumbel = target.endswith("GumbelVQ")
    return VQGANSpec(target, dict(TINY_VQGAN), 64, 32 if gumbel else 16, gumbel, "")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A randomly initialised tiny VQGAN (YAML + ckpt) and CLIP (state dict), saved once."""
    from vqclip.models import build_clip, build_vqgan, save_clip, save_vqgan

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vqgan = build_vqgan(tiny_vqgan_spec())
    # Spread the codebook like a trained one (taming initialises it in a tiny range).
    vqgan.codebook.data.normal_(0, 1)
    save_vqgan(vqgan, root / "vqgan.yaml", root / "vqgan.ckpt")
    save_clip(build_clip(**TINY_CLIP), root / "clip.pt", fp16=False)
    return {"yaml": root / "vqgan.yaml", "ckpt": root / "vqgan.ckpt", "clip": root / "clip.pt"}


@pytest.fixture
def tiny_config(tiny_models: dict[str, Path], tmp_path: Path) -> GenerationConfig:
    """A fast config on the tiny models: 32x32, 8 cutouts, no augments, CPU; the rest from the
    classic preset, resolved here so that tests read its values."""
    from vqclip import presets

    return presets.apply(
        GenerationConfig(
            prompts="a red circle",
            vqgan=str(tiny_models["yaml"]),
            clip_model=str(tiny_models["clip"]),
            width=32,
            height=32,
            cutn=8,
            augments=(),
            max_iterations=10,
            display_frequency=5,
            seed=1,
            device="cpu",
            output_dir=str(tmp_path / "outputs"),
        )
    )
