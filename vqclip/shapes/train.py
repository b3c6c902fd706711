"""Train the shapes world's tiny VQGAN and CLIP on CPU, seeded and reproducible.

    python -m vqclip.shapes.train vqgan [--steps N] [--out DIR]
    python -m vqclip.shapes.train clip  [--steps N] [--out DIR]

The VQGAN is taming's Encoder/Decoder/VectorQuantizer2 trained with L1 + L2 reconstruction and
the codebook/commitment loss (no GAN, no LPIPS); unused codes are re-seeded from encoder outputs.
The CLIP is a ``clip.model.CLIP`` (a small ModifiedResNet image tower) trained contrastively on
mildly augmented image-caption pairs, with hard negatives (a second shape of another colour;
scattered blocks of other colours; the same colours in another shape; a ragged blob).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.cutouts import augment, make_augments, make_cutouts, normalize
from vqclip.latents import decode_latent, encode_image, random_latent
from vqclip.losses import spherical_dist_loss
from vqclip.models import (
    VQ_TARGET,
    VQGANSpec,
    build_clip,
    build_vqgan,
    load_clip,
    load_vqgan,
    save_clip,
    save_vqgan,
    tokenize,
)  # fmt: skip
from vqclip.optimize import clamp_to_codebook
from vqclip.shapes.data import COLORS, SHAPES, Scene, caption, draw_shape, render, sample_scenes

__all__ = [
    "VQGAN_SPEC",
    "CLIP_SHAPE",
    "CLIP_AUGMENTS",
    "DreamPool",
    "train_vqgan",
    "train_clip",
    "main",
]

log = logging.getLogger(__name__)
WEIGHTS = Path(__file__).parent / "weights"

VQGAN_SPEC = VQGANSpec(
    target=VQ_TARGET,
    ddconfig={
        "double_z": False, "z_channels": 64, "resolution": 64, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
    },
    n_embed=256,
    embed_dim=32,
    gumbel=False,
    prefix="",
)  # fmt: skip
# clip.model.CLIP arguments: a ModifiedResNet image tower (the RN50 family's, four stages of one
# bottleneck block, width 16) on 64x64 images, and short captions. build_model infers the text
# heads as width // 64, so they must be exactly that for the saved file to load the same.
CLIP_SHAPE = {
    "embed_dim": 128, "image_resolution": 64, "vision_layers": (1, 1, 1, 1), "vision_width": 16,
    "vision_patch_size": None, "context_length": 24, "vocab_size": 49408,
    "transformer_width": 128, "transformer_heads": 2, "transformer_layers": 4,
}  # fmt: skip
# Mild augmentations for CLIP's training: with perspective and erasing too (the generation
# loop's defaults) it told circles from squares at chance (zero-shot shape 56%); with these, 93%.
CLIP_AUGMENTS = ("Af", "Ji")


def _lr(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to 5% of the peak."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return peak * (0.05 + 0.95 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item()))


def _reseed_dead_codes(
    codebook: torch.Tensor, usage: torch.Tensor, h: torch.Tensor, g: torch.Generator
) -> int:
    """Move codes unused since the last reseed onto random encoder outputs; returns how many."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        flat = h.detach().permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        pick = torch.randint(len(flat), (len(dead),), generator=g)
        codebook.data[dead] = flat[pick]
    usage.zero_()
    return len(dead)


def train_vqgan(steps: int, out: Path, seed: int = 0, batch: int = 16) -> dict[str, float]:
    """Train and save ``shapes_vqgan.yaml`` + ``.ckpt`` into ``out``; returns final metrics."""
    torch.manual_seed(seed)  # taming's layers initialise from the global RNG
    g = torch.Generator().manual_seed(seed)
    model = build_vqgan(VQGAN_SPEC).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.9))
    usage = torch.zeros(VQGAN_SPEC.n_embed)
    start = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, steps, 2e-3)
        x = render(sample_scenes(batch, g)) * 2 - 1  # (B, 3, 64, 64) in [-1, 1]
        h = model.quant_conv(model.encoder(x))
        z_q, q_loss, (_, _, codes) = model.quantize(h)
        rec = model.decode(z_q)
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + q_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        usage += torch.bincount(codes.flatten(), minlength=VQGAN_SPEC.n_embed)
        if step % 100 == 99 and step < steps * 0.8:
            dead = _reseed_dead_codes(model.codebook, usage, h, g)
            log.info(
                "vqgan step %d loss %.4f dead codes %d (%.0fs)",
                step + 1,
                loss.item(),
                dead,
                time.time() - start,
            )
    metrics = {"psnr": _psnr(model.eval(), seed + 1), "seconds": time.time() - start}
    out.mkdir(parents=True, exist_ok=True)
    save_vqgan(model, out / "shapes_vqgan.yaml", out / "shapes_vqgan.ckpt")
    log.info("vqgan done: %s", metrics)
    return metrics


@torch.no_grad()
def _psnr(model: torch.nn.Module, seed: int, count: int = 64) -> float:
    """Reconstruction PSNR (dB) on held-out images, through the same encode/decode as the loop."""
    x = render(sample_scenes(count, torch.Generator().manual_seed(10_000 + seed)))
    rec = model.decode(model.encode(x * 2 - 1)).add(1).div(2).clamp(0, 1)
    return float(10 * torch.log10(1 / (rec - x).pow(2).mean()))


def _two_shapes(images: torch.Tensor, scenes: list[Scene], g: torch.Generator) -> torch.Tensor:
    """A second, smaller shape of another colour drawn over each image."""
    for i, other in enumerate(sample_scenes(len(scenes), g)):
        images[i] = draw_shape(images[i], replace(other, radius=other.radius * 0.8))
    return images


def _patchy(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blocks of random palette colours (4x4-pixel cells, like a VQGAN latent's) over 30%."""
    cells = images.shape[-1] // 4
    palette = torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255  # (C, 3)
    colors = palette[torch.randint(len(palette), (len(images), cells, cells), generator=g)]
    mask = torch.rand(len(images), 1, cells, cells, generator=g) < 0.3
    up = lambda x: F.interpolate(x.float(), scale_factor=4, mode="nearest")  # noqa: E731
    return torch.where(up(mask) > 0, up(colors.permute(0, 3, 1, 2)), images)


def _blobs(scenes: list[Scene], g: torch.Generator) -> torch.Tensor:
    """The scene's colours, but the shape is a ragged blob (plus specks) of about its size."""
    size = 64
    noise = F.interpolate(
        torch.rand(len(scenes), 1, 8, 8, generator=g), size=(size, size), mode="bicubic"
    )
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    images = []
    for scene, n in zip(scenes, noise, strict=True):
        bump = 1 - ((x - scene.cx) ** 2 + (y - scene.cy) ** 2).sqrt() / (1.3 * scene.radius)
        mask = (bump + 0.9 * (n[0] - 0.5) > 0.15).float()[None]  # (1, S, S)
        fg = torch.tensor(COLORS[scene.color]).view(3, 1, 1) / 255
        bg = torch.tensor(COLORS[scene.background]).view(3, 1, 1) / 255
        images.append(mask * fg + (1 - mask) * bg)
    return torch.stack(images)


def _negatives(scenes: list[Scene], g: torch.Generator) -> torch.Tensor:
    """Hard negatives that no single-shape caption should match best, a quarter of each kind:
    a second shape of another colour; scattered colour blocks; the same colours and place in
    another shape; a ragged blob instead of the shape (what an optimisation that fools CLIP
    draws)."""
    quarters = [scenes[i::4] for i in range(4)]
    swapped = [replace(s, shape=SHAPES[(SHAPES.index(s.shape) + 1) % 3]) for s in quarters[2]]
    return torch.cat([
        _two_shapes(render(quarters[0]), quarters[0], g),
        _patchy(render(quarters[1]), g),
        render(swapped),
        _blobs(quarters[3], g),
    ])  # fmt: skip


class DreamPool:
    """Images the generation loop draws for captions, kept and moved on as CLIP trains.

    Each training step moves every dream a few loop steps (random codes, straight-through
    quantisation, augmented cutouts, spherical distance, Adam) toward its caption under the
    current CLIP; every 10 steps a sixth restarts from random codes with a new
    caption. They are the negatives that matter most: what the loop reaches by fooling CLIP.
    """

    def __init__(self, vqgan: nn.Module, size: int, g: torch.Generator, cutn: int = 2) -> None:
        self.vqgan, self.g, self.cutn, self.next = vqgan, g, cutn, 0
        self.augments = make_augments(("Af", "Pe", "Ji", "Er"), CLIP_SHAPE["image_resolution"])
        self.scenes = sample_scenes(size, g)
        self.captions = [caption(s, g) for s in self.scenes]
        f = vqgan.spec.factor
        self.latent = random_latent(vqgan.codebook, size, 64 // f, 64 // f, g).requires_grad_()
        self.optimizer = torch.optim.Adam([self.latent], lr=0.1)

    def renew(self, count: int) -> None:
        """Restart ``count`` dreams (the oldest) from random codes with new captions."""
        rows = [(self.next + i) % len(self.scenes) for i in range(count)]
        self.next = (self.next + count) % len(self.scenes)
        f = self.vqgan.spec.factor
        fresh = random_latent(self.vqgan.codebook, count, 64 // f, 64 // f, self.g)
        state = self.optimizer.state.get(self.latent, {})
        with torch.no_grad():
            self.latent[rows] = fresh
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][rows] = 0
        for row, scene in zip(rows, sample_scenes(count, self.g), strict=True):
            self.scenes[row], self.captions[row] = scene, caption(scene, self.g)

    def advance(self, model: nn.Module, steps: int) -> torch.Tensor:
        """Move every dream ``steps`` loop steps under ``model``; returns the images (N, 3, 64,
        64) in [0, 1], detached."""
        with torch.no_grad():
            texts = F.normalize(model.encode_text(tokenize(model, self.captions)), dim=-1)
        for _ in range(steps):
            image = decode_latent(self.vqgan, self.latent)  # (N, 3, 64, 64)
            cuts = make_cutouts(image, image.shape[-1], self.cutn, 1.0, self.g)
            seed = int(torch.randint(2**62, (1,), generator=self.g))
            cuts = augment(cuts, self.augments, 0.1, self.g, seed)  # (N * cutn, 3, 64, 64)
            embeds = model.encode_image(normalize(cuts)).view(len(texts), self.cutn, -1)
            loss = spherical_dist_loss(embeds, texts[:, None]).mean() * len(texts)
            (self.latent.grad,) = torch.autograd.grad(loss, self.latent)
            self.optimizer.step()
            clamp_to_codebook([self.latent], self.vqgan.codebook)
        with torch.no_grad():
            return decode_latent(self.vqgan, self.latent)


def _positives(scenes: list[Scene], vqgan: torch.nn.Module | None) -> torch.Tensor:
    """Clean renderings; with a VQGAN, every other one through encode/decode, so that the
    decoder's look alone never tells a dream from a positive."""
    images = render(scenes)
    if vqgan is None:
        return images
    with torch.no_grad():
        rebuilt = vqgan.decode(encode_image(vqgan, images[::2])).add(1).div(2).clamp(0, 1)
    images[::2] = rebuilt
    return images


def train_clip(
    steps: int,
    out: Path,
    seed: int = 0,
    batch: int = 96,
    init: Path | None = None,
    lr: float = 5e-4,
    augments: tuple[str, ...] = CLIP_AUGMENTS,
    dreams: int = 0,
    dream_steps: int = 1,
    vqgan_dir: Path = WEIGHTS,
) -> dict[str, float]:
    """Train (or, from ``init``, fine-tune) and save ``shapes_clip.pt`` into ``out``.

    With ``dreams > 0``, a :class:`DreamPool` of that many images drawn by the generation loop
    with the shapes VQGAN (from ``vqgan_dir``) and the CLIP being trained moves on
    ``dream_steps`` loop steps per training step; each dream's caption must prefer its clean
    scene over the loop's drawing.
    """
    torch.manual_seed(seed)  # clip's layers initialise from the global RNG
    g = torch.Generator().manual_seed(seed)
    model = build_clip(**CLIP_SHAPE)
    if init is not None:
        model.load_state_dict(load_clip(init).state_dict())
    model.train().requires_grad_(True)
    augment_images = make_augments(augments, CLIP_SHAPE["image_resolution"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    vqgan, pool = None, None
    if dreams:
        vqgan = load_vqgan(vqgan_dir / "shapes_vqgan.yaml", vqgan_dir / "shapes_vqgan.ckpt")
        pool = DreamPool(vqgan, dreams, g)
    start = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, steps, lr)
        dreamed, scenes, texts = torch.zeros(0, 3, 64, 64), [], []
        if pool is not None:
            if step % 10 == 9:
                pool.renew(max(1, dreams // 6))  # a dream lives ~60 loop steps
            dreamed, scenes, texts = pool.advance(model, dream_steps), pool.scenes, pool.captions
        fresh = sample_scenes(batch - len(scenes), g)
        scenes, texts = scenes + fresh, texts + [caption(s, g) for s in fresh]
        images = torch.cat([_positives(scenes, vqgan), _negatives(fresh[: batch // 2], g)])
        images = torch.cat([images, dreamed])
        images = augment(images, augment_images, 0.1, g, seed * 1_000_003 + step).clamp(0, 1)
        tokens = tokenize(model, texts)
        image_emb = F.normalize(model.encode_image(normalize(images)), dim=-1)  # (B + negs, E)
        text_emb = F.normalize(model.encode_text(tokens), dim=-1)  # (B, E)
        logits = model.logit_scale.exp() * image_emb @ text_emb.T
        labels = torch.arange(batch)
        # Texts must pick their own clean image over every other image, negatives included.
        loss = (F.cross_entropy(logits[:batch], labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        if not torch.isfinite(loss):  # a rare degenerate augmented batch: skip, don't poison
            log.warning("clip step %d: non-finite loss, skipped", step + 1)
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # CLIP's cap on the temperature: exp(scale) <= 100
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 99:
            log.info("clip step %d loss %.4f (%.0fs)", step + 1, loss.item(), time.time() - start)
    out.mkdir(parents=True, exist_ok=True)
    save_clip(model.eval(), out / "shapes_clip.pt")
    metrics = {"loss": float(loss.detach()), "seconds": time.time() - start}
    log.info("clip done: %s", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m vqclip.shapes.train vqgan|clip``."""
    parser = argparse.ArgumentParser(
        prog="python -m vqclip.shapes.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", choices=["vqgan", "clip"])
    parser.add_argument("--steps", type=int, default=None, help="default: 1500 (vqgan), 600 (clip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="default: the package's weights")
    parser.add_argument("--init", type=Path, help="clip: fine-tune from this CLIP file")
    parser.add_argument("--lr", type=float, default=5e-4, help="clip: peak learning rate")
    parser.add_argument(
        "--augments", nargs="*", default=list(CLIP_AUGMENTS), help="clip: kornia augments"
    )
    parser.add_argument(
        "--dreams", type=int, default=0, help="clip: images the loop draws as negatives (0: off)"
    )
    parser.add_argument("--dream-steps", type=int, default=1, help="clip: loop steps per step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.use_deterministic_algorithms(True)
    if args.model == "vqgan":
        metrics = train_vqgan(args.steps or 1500, args.out, args.seed)
    else:
        metrics = train_clip(
            args.steps or 600, args.out, args.seed, init=args.init, lr=args.lr,
            augments=tuple(args.augments), dreams=args.dreams, dream_steps=args.dream_steps,
        )  # fmt: skip
    print(metrics)


if __name__ == "__main__":
    main()
