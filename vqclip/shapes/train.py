"""Train the shapes world's tiny VQGAN, CLIP and image prior on CPU, seeded and reproducible.

    python -m vqclip.shapes.train vqgan [--steps N] [--out DIR]
    python -m vqclip.shapes.train clip  [--steps N] [--out DIR] [--init FILE] [--lr LR]
                                        [--adversarial EPS] [--noise SIGMA]
    python -m vqclip.shapes.train clip-vit [as clip: the second, ViT, perceptor]
    python -m vqclip.shapes.train prior [--steps N] [--out DIR]
    python -m vqclip.shapes.train diffusion [--steps N] [--out DIR] [--init FILE] [--unconditional]
    python -m vqclip.shapes.train upscaler [--steps N] [--out DIR]

The VQGAN is taming's Encoder/Decoder/VectorQuantizer2 trained with L1 + L2 reconstruction and
the codebook/commitment loss (no GAN, no LPIPS); unused codes are re-seeded from encoder outputs.
The CLIP is a ``clip.model.CLIP`` (a small ModifiedResNet image tower) trained contrastively on
mildly augmented image-caption pairs, with hard negatives (a second shape of another colour;
scattered blocks of other colours; the same colours in another shape; a ragged blob).

The shipped CLIP is then fine-tuned twice: with strong per-image Gaussian noise (``--init ...
--noise 0.3``), which keeps shape in its embedding, and adversarially (``--init ... --noise 0.3
--adversarial 0.03``): each positive is moved by a 3-step attack within +-0.03 per pixel to
mismatch its caption before CLIP learns from it. A CLIP that such small changes cannot fool has
gradients that mean something to the eye, so the generation loop paints flat regions of the
prompted colours instead of textures that fool it.

The diffusion model is a small :class:`vqclip.models.unet.UNet` (OpenAI's guided-diffusion
architecture) trained at 32x32 to predict the noise of noised renderings (the plain DDPM loss,
cosine schedule, fixed variances), its weights averaged over the steps (EMA), as OpenAI's. It
reads the shapes CLIP's embedding of each scene's caption (zeros a fifth of the time), so that
sampling can use classifier-free guidance beside CLIP's.

The upscaler is Real-ESRGAN's compact SRVGG net (spandrel's ``Compact``: 8 convolutions of 32
features, then a pixel shuffle added to the nearest-neighbour upscale) trained with a squared
error (an L1 loss settles on adding nothing) to restore renderings at 4x from their 4x4 averages (as the world's images are made), lightly
noised; :func:`upscaler_psnr` compares it with Lanczos on held-out scenes.

The image prior (:class:`vqclip.shapes.prior.ScenePrior`) learns to read the scene of corrupted
renderings (smoothly warped into blobs, noisy, speckled): the two colours, the shape, its place.
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

from vqclip.loop.cutouts import augment, make_augments
from vqclip.loop.optimise import NOISE
from vqclip.loop.perceptors import normalize
from vqclip.models.checkpoints import load_checkpoint
from vqclip.models.prior import load_prior, save_prior
from vqclip.models.unet import UNet, UNetSpec, save_unet
from vqclip.models.vqgan_clip import (
    VQ_TARGET,
    VQGANSpec,
    build_clip,
    build_vqgan,
    load_clip,
    save_clip,
    save_vqgan,
    tokenize,
)  # fmt: skip
from vqclip.shapes.data import COLORS, SHAPES, Scene, caption, draw_shape, render, sample_scenes
from vqclip.shapes.prior import ScenePrior, reading_accuracy, scene_targets

__all__ = [
    "VQGAN_SPEC",
    "CLIP_SHAPE",
    "CLIP_VIT_SHAPE",
    "CLIP_AUGMENTS",
    "adversarial_images",
    "train_vqgan",
    "train_clip",
    "train_prior",
    "train_diffusion",
    "DIFFUSION_SPEC",
    "train_upscaler",
    "upscaler_psnr",
    "corrupt",
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
# The second perceptor, so that an ensemble runs offline: a ViT (patches of 8 pixels) beside the
# ResNet above, and a narrower text tower (its 49408-token embedding is most of the file).
CLIP_VIT_SHAPE = {
    "embed_dim": 64, "image_resolution": 64, "vision_layers": 4, "vision_width": 128,
    "vision_patch_size": 8, "context_length": 24, "vocab_size": 49408,
    "transformer_width": 64, "transformer_heads": 1, "transformer_layers": 3,
}  # fmt: skip
CLIP_FILES = {"clip": ("shapes_clip.pt", CLIP_SHAPE), "clip-vit": ("shapes_clip_vit.pt", CLIP_VIT_SHAPE)}  # fmt: skip
# Mild augmentations for CLIP's training: with perspective and erasing too (the generation
# loop's defaults) it told circles from squares at chance (zero-shot shape 56%); with these, 93%.
CLIP_AUGMENTS = ("Af", "Ji")
# The diffusion model: 32x32 (a quarter of the 64x64 compute: 0.4 s a training step here),
# three downsamplings, attention at 4x4, noise only (fixed variances: the plain DDPM loss).
DIFFUSION_SPEC = UNetSpec(
    image_size=32, num_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2, 2),
    attention_resolutions=(4,), num_head_channels=32, learn_sigma=False, noise_schedule="cosine",
    sigma_small=True,
)  # fmt: skip
DIFFUSION_EMA = 0.995
# Trained on the shapes CLIP's text embeddings of the scenes' captions, dropped (zeros) this
# share of the time, so that one model also predicts unconditionally (classifier-free guidance)
DIFFUSION_COND = replace(DIFFUSION_SPEC, cond_dim=CLIP_SHAPE["embed_dim"], cond_clip="shapes-clip")  # fmt: skip
DIFFUSION_DROP = 0.2
PRIOR_GEOMETRY_WEIGHT = 20.0  # the prior's loss: geometry error (image sides squared) vs names


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


def adversarial_images(
    model: nn.Module,
    images: torch.Tensor,
    text_emb: torch.Tensor,
    eps: float,
    g: torch.Generator,
    steps: int = 3,
) -> torch.Tensor:
    """``images`` (N, 3, S, S) moved within an L-infinity ball of ``eps`` to mismatch their
    captions ``text_emb`` (N, E) (projected gradient ascent from a random point)."""
    was_training = model.training
    model.eval()  # attack with BatchNorm's running statistics; don't update them
    labels = torch.arange(len(images))
    delta = (torch.rand(images.shape, generator=g) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        emb = F.normalize(model.encode_image(normalize((images + delta).clamp(0, 1))), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * emb @ text_emb.T, labels)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps).detach()
    model.train(was_training)
    return (images + delta).clamp(0, 1)


def train_clip(
    steps: int,
    out: Path,
    seed: int = 0,
    batch: int = 96,
    init: Path | None = None,
    lr: float = 5e-4,
    augments: tuple[str, ...] = CLIP_AUGMENTS,
    adversarial: float = 0.0,
    noise: float = NOISE,
    kind: str = "clip",
) -> dict[str, float]:
    """Train (or, from ``init``, fine-tune) and save ``shapes_clip.pt`` (``kind`` "clip-vit":
    ``shapes_clip_vit.pt``) into ``out``.

    With ``adversarial > 0``, CLIP learns from positives attacked within that L-infinity radius
    (:func:`adversarial_images`). ``noise`` bounds the per-image Gaussian noise scale (by
    default the generation loop's).
    """
    torch.manual_seed(seed)  # clip's layers initialise from the global RNG
    g = torch.Generator().manual_seed(seed)
    name, shape = CLIP_FILES[kind]
    model = build_clip(**shape)
    if init is not None:
        model.load_state_dict(load_clip(init).state_dict())
    model.train().requires_grad_(True)
    augment_images = make_augments(augments, shape["image_resolution"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    start = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, steps, lr)
        scenes = sample_scenes(batch, g)
        texts = [caption(s, g) for s in scenes]
        images = torch.cat([render(scenes), _negatives(scenes[: batch // 2], g)])
        images = augment(images, augment_images, noise, g, seed * 1_000_003 + step).clamp(0, 1)
        text_emb = F.normalize(model.encode_text(tokenize(model, texts)), dim=-1)  # (B, E)
        if adversarial:  # the attack aims at the same text embeddings, without their gradient
            images[:batch] = adversarial_images(
                model, images[:batch], text_emb.detach(), adversarial, g
            )
        image_emb = F.normalize(model.encode_image(normalize(images)), dim=-1)  # (B + negs, E)
        logits = model.logit_scale.exp() * image_emb @ text_emb.T
        labels = torch.arange(batch)
        # Texts must pick their own image (attacked, when adversarial) over every other image,
        # negatives included.
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
    save_clip(model.eval(), out / name)
    metrics = {"loss": float(loss.detach()), "seconds": time.time() - start}
    log.info("clip done: %s", metrics)
    return metrics


def _warp(images: torch.Tensor, amplitude: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Bend each image by a smooth random displacement (a 4x4 field, bicubic): shapes -> blobs."""
    n, size = len(images), images.shape[-1]
    field = torch.randn(n, 2, 4, 4, generator=g) * amplitude.view(n, 1, 1, 1)
    flow = F.interpolate(field, (size, size), mode="bicubic", align_corners=False)
    identity = torch.eye(2, 3).expand(n, 2, 3)
    grid = F.affine_grid(identity, [n, 3, size, size], align_corners=False)
    return F.grid_sample(
        images, grid + flow.permute(0, 2, 3, 1), padding_mode="border", align_corners=False
    )


def corrupt(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """What the prior learns to undo: a smooth warp of up to ~8 px, Gaussian noise up to 0.2,
    and low-frequency colour speckle up to 0.15."""
    n, size = len(images), images.shape[-1]
    warped = _warp(images, torch.rand(n, generator=g) * 0.25, g)
    noisy = warped + torch.rand(n, 1, 1, 1, generator=g) * 0.2 * torch.randn(
        warped.shape, generator=g
    )
    speckle = F.interpolate(torch.randn(n, 3, 16, 16, generator=g), (size, size), mode="bilinear")
    return (noisy + torch.rand(n, 1, 1, 1, generator=g) * 0.15 * speckle).clamp(0, 1)


def train_prior(steps: int, out: Path, seed: int = 0, batch: int = 64) -> dict[str, float]:
    """Train and save ``shapes_prior.pt`` into ``out``: a :class:`ScenePrior` that reads the
    scene of corrupted renderings (:func:`corrupt`): cross-entropy on the three names, squared
    error on the geometry."""
    torch.manual_seed(seed)  # the layers initialise from the global RNG
    g = torch.Generator().manual_seed(seed)
    scenes = sample_scenes(8000, g)
    pool, targets = render(scenes), scene_targets(scenes)  # (8000, 3, 64, 64), per-scene truths
    model = ScenePrior().train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 2e-3, total_steps=steps, pct_start=0.1
    )
    start = time.time()
    for step in range(steps):
        pick = torch.randint(len(pool), (batch,), generator=g)
        *names, geometry = model.heads(corrupt(pool[pick], g))
        loss = sum(F.cross_entropy(x, t[pick]) for x, t in zip(names, targets[:3], strict=True))
        loss = loss + PRIOR_GEOMETRY_WEIGHT * F.mse_loss(geometry, targets[-1][pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 499:
            log.info("prior step %d loss %.4f (%.0fs)", step + 1, loss.item(), time.time() - start)
    model.eval()
    seconds = time.time() - start
    out.mkdir(parents=True, exist_ok=True)
    save_prior(model, out / "shapes_prior.pt")
    held = sample_scenes(300, torch.Generator().manual_seed(10_000 + seed))
    clean = render(held)
    blobs = corrupt(clean, torch.Generator().manual_seed(seed + 1))
    saved, metrics = load_prior(out / "shapes_prior.pt"), {"seconds": seconds}
    for name, images in (("clean", clean), ("corrupted", blobs)):
        for field, share in reading_accuracy(saved, images, held).items():
            metrics[f"{name}_{field}_accuracy"] = share
    log.info("prior done: %s", metrics)
    return metrics


def train_diffusion(
    steps: int,
    out: Path,
    seed: int = 0,
    batch: int = 32,
    init: Path | None = None,
    lr: float = 1e-3,
    condition: bool = True,
) -> dict[str, float]:
    """Train and save ``shapes_diffusion.pt`` (and its flags, ``.json``) into ``out``: the noise
    of renderings noised to a uniform random step, mean squared error; the EMA weights saved.
    With ``condition``, the model also reads the shapes CLIP's embedding of each scene's
    caption (``DIFFUSION_COND``). ``init``: go on from those weights (with a fresh optimiser
    and schedule; an unconditional model's, its condition's projection starting at zero)."""
    from vqclip.loop.diffusion import _betas

    torch.manual_seed(seed)  # the layers initialise from the global RNG
    g = torch.Generator().manual_seed(seed)
    spec = DIFFUSION_COND if condition else DIFFUSION_SPEC
    size = spec.image_size
    acp = torch.cumprod(1 - _betas(spec.diffusion_steps, spec.noise_schedule), 0).float()
    model = UNet(spec).train()
    if condition:
        nn.init.zeros_(model.cond_embed.weight)
        nn.init.zeros_(model.cond_embed.bias)
        clip = load_clip(WEIGHTS / CLIP_FILES["clip"][0]).eval().requires_grad_(False)
    if init is not None:
        missing, unexpected = model.load_state_dict(load_checkpoint(init), strict=False)
        if unexpected or any(not k.startswith("cond_embed.") for k in missing):
            raise ValueError(f"--init: {init} does not fit (missing {missing}, unexpected {unexpected})")  # fmt: skip
    ema = UNet(spec).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.0)
    start, losses = time.time(), []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, steps, lr)
        scenes = sample_scenes(batch, g)
        x0 = render(scenes, size) * 2 - 1
        t = torch.randint(spec.diffusion_steps, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = acp[t].view(-1, 1, 1, 1)
        cond = None
        if condition:
            with torch.no_grad():
                texts = tokenize(clip, [caption(s, g) for s in scenes])
                cond = F.normalize(clip.encode_text(texts).float(), dim=-1)
            cond = cond * (torch.rand(batch, 1, generator=g) >= DIFFUSION_DROP)
        loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t.float(), cond), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for kept, new in zip(ema.parameters(), model.parameters(), strict=True):
                kept.lerp_(new, 1 - DIFFUSION_EMA)
        losses.append(loss.item())
        if step % 200 == 199:
            recent = sum(losses[-200:]) / 200
            log.info("diffusion step %d loss %.4f (%.0fs)", step + 1, recent, time.time() - start)
    out.mkdir(parents=True, exist_ok=True)
    save_unet(ema, out / "shapes_diffusion.pt")
    metrics = {"seconds": time.time() - start, "final_loss": sum(losses[-200:]) / len(losses[-200:])}  # fmt: skip
    log.info("diffusion done: %s", metrics)
    return metrics


UPSCALER_SHAPE = {"num_feat": 32, "num_conv": 8, "upscale": 4}  # Real-ESRGAN's compact net
UPSCALER_SIZE = 32  # scenes of 32x32 inputs, 128x128 targets
UPSCALER_CROP = 24  # trained on crops of 24x24 inputs, flipped and turned


def upscaler_pairs(count: int, g: torch.Generator, size: int = UPSCALER_SIZE) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(small, large): renderings at ``4 * size`` and their 4x4 averages, which is how the
    world's images are rendered at ``size`` (its edges anti-aliased the same way)."""
    large = render(sample_scenes(count, g), 4 * size)
    return F.avg_pool2d(large, 4), large


def train_upscaler(steps: int, out: Path, seed: int = 0, batch: int = 16, lr: float = 1e-3, scenes: int = 512) -> dict[str, float]:  # fmt: skip
    """Train and save ``shapes_upscaler.pth`` (fp16) into ``out``: Real-ESRGAN's compact
    SRVGG net, which adds what it learns to the nearest-neighbour upscale, on crops of
    ``scenes`` pre-rendered scenes (rendering at 4x costs more than a step); returns its PSNR and
    Lanczos's on held-out scenes."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    pool = [upscaler_pairs(min(64, scenes - n), g) for n in range(0, scenes, 64)]
    smalls, larges = (torch.cat(part) for part in zip(*pool, strict=True))
    model = Compact(**UPSCALER_SHAPE).train()
    optimizer = torch.optim.Adam(model.parameters(), lr)
    start, losses, crop = time.time(), [], UPSCALER_CROP
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, steps, lr)
        pick = torch.randint(len(smalls), (batch,), generator=g)
        y, x = torch.randint(UPSCALER_SIZE - crop + 1, (2,), generator=g).tolist()
        small = smalls[pick, :, y : y + crop, x : x + crop]
        large = larges[pick, :, 4 * y : 4 * (y + crop), 4 * x : 4 * (x + crop)]
        turns, flip = torch.randint(4, (1,), generator=g).item(), torch.rand(1, generator=g).item() < 0.5  # fmt: skip
        small, large = (t.rot90(turns, (2, 3)) for t in (small, large))
        if flip:
            small, large = small.flip(3), large.flip(3)
        noise = torch.rand(batch, 1, 1, 1, generator=g) * 0.02  # generated images are not clean
        small = (small + noise * torch.randn(small.shape, generator=g)).clamp(0, 1)
        loss = F.mse_loss(model(small), large)  # L1 settles on no residual: nearest-neighbour
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 200 == 199:
            recent = sum(losses[-200:]) / 200
            log.info("upscaler step %d loss %.4f (%.0fs)", step + 1, recent, time.time() - start)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, out / "shapes_upscaler.pth")
    metrics = {"seconds": time.time() - start, **upscaler_psnr(str(out / "shapes_upscaler.pth"), seed)}  # fmt: skip
    log.info("upscaler done: %s", metrics)
    return metrics


def upscaler_psnr(model: str, seed: int = 0, count: int = 64) -> dict[str, float]:
    """PSNR (dB) of ``model`` (a path or name), of Lanczos and of nearest neighbour, restoring
    held-out renderings at 4x from their 4x4 averages (here 256x256 from 64x64)."""
    from vqclip.run.upscale import LANCZOS, load_upscaler

    small, large = upscaler_pairs(count, torch.Generator().manual_seed(20_000 + seed), 64)
    ups = {
        "psnr": load_upscaler(model),
        "lanczos_psnr": load_upscaler(LANCZOS),
        "nearest_psnr": lambda images, scale: F.interpolate(images, scale_factor=scale),
    }
    psnr = {}
    for name, upscaler in ups.items():
        error = (upscaler(small, 4) - large).pow(2).mean()
        psnr[name] = float(10 * torch.log10(1 / error))
    return psnr


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m vqclip.shapes.train vqgan|clip``."""
    parser = argparse.ArgumentParser(
        prog="python -m vqclip.shapes.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", choices=["vqgan", "clip", "clip-vit", "prior", "diffusion", "upscaler"]
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="default: 1500 (vqgan, upscaler), 600 (clip, clip-vit), 3000 (prior, diffusion)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="default: the package's weights")
    parser.add_argument("--init", type=Path, help="clip, diffusion: fine-tune from this file")
    parser.add_argument(
        "--lr", type=float, help="clip, diffusion: peak learning rate (default 5e-4, 1e-3)"
    )
    parser.add_argument(
        "--augments", nargs="*", default=list(CLIP_AUGMENTS), help="clip: kornia augments"
    )
    parser.add_argument(
        "--adversarial", type=float, default=0.0, help="clip: L-inf radius of attacks (0: off)"
    )
    parser.add_argument(
        "--noise", type=float, default=NOISE, help="clip: largest per-image Gaussian noise scale"
    )
    parser.add_argument(
        "--unconditional", action="store_true", help="diffusion: without the caption's condition"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.use_deterministic_algorithms(True)
    if args.model == "vqgan":
        metrics = train_vqgan(args.steps or 1500, args.out, args.seed)
    elif args.model == "prior":
        metrics = train_prior(args.steps or 3000, args.out, args.seed)
    elif args.model == "upscaler":
        metrics = train_upscaler(args.steps or 1500, args.out, args.seed)
    elif args.model == "diffusion":
        metrics = train_diffusion(
            args.steps or 3000, args.out, args.seed, init=args.init, lr=args.lr or 1e-3,
            condition=not args.unconditional,
        )  # fmt: skip
    else:
        metrics = train_clip(
            args.steps or 600, args.out, args.seed, init=args.init, lr=args.lr or 5e-4,
            augments=tuple(args.augments), adversarial=args.adversarial, noise=args.noise,
            kind=args.model,
        )  # fmt: skip
    print(metrics)


if __name__ == "__main__":
    main()
