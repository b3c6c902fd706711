"""The U-Net of OpenAI's guided diffusion, written for vqclip: the same modules under the same
parameter names, so that OpenAI's published checkpoints (``256x256_diffusion_uncond.pt``, a
plain state dict) and the fine-tuned 512x512 one load into it strictly, weights-only.

Why our own and not a package: ``guided-diffusion-sdk`` is a 2022 copy of OpenAI's code with
its own fp16 and checkpointing machinery and no sampler that takes a ``torch.Generator``;
``diffusers`` names the same weights differently and needs a conversion per checkpoint. The
architecture is small (docs/design.md), and a test checks that it computes what OpenAI's class
computes for the same weights.

A checkpoint holds no architecture: a :class:`UNetSpec` (OpenAI's model flags: the registry's,
or a JSON file beside the weights) says what to build.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.core.files import write_atomic
from vqclip.models.checkpoints import check_fits, load_checkpoint

__all__ = ["UNetSpec", "UNet", "build_unet", "load_unet", "save_unet"]


@dataclass(frozen=True)
class UNetSpec:
    """A guided-diffusion model's flags, named as in OpenAI's ``model_and_diffusion_defaults``."""

    image_size: int
    num_channels: int
    num_res_blocks: int
    channel_mult: tuple[float, ...]  # per resolution, from the image size down
    attention_resolutions: tuple[int, ...]  # feature-map sides with self-attention
    num_heads: int = 4
    num_head_channels: int = -1  # channels per head (-1: num_heads heads)
    learn_sigma: bool = True  # the model also predicts its variance (6 output channels)
    sigma_small: bool = False  # without learn_sigma: the posterior's variance, else beta's
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"  # or "cosine"
    # vqclip's, beyond OpenAI's flags: a model conditioned on a CLIP's unit text embedding (of
    # width cond_dim, from the registry's CLIP cond_clip; zeros: no condition), added to the
    # time embedding as GLIDE adds its text's, so classifier-free guidance can scale it
    cond_dim: int = 0
    cond_clip: str = ""

    def __post_init__(self) -> None:
        for name in ("channel_mult", "attention_resolutions"):
            value = getattr(self, name)
            if isinstance(value, str):  # OpenAI's command-line form, "32,16,8"
                value = tuple(_number(x, name) for x in value.split(",")[:64] if x)
            if not isinstance(value, list | tuple):
                raise ValueError(f"diffusion model: {name} is {str(value)[:40]}, expected a list or '32,16,8'")  # fmt: skip
            object.__setattr__(self, name, tuple(value))
        for name, top in _BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= top:
                raise ValueError(f"diffusion model: {name} is {repr(value)[:40]}, expected an integer from 1 to {top}")  # fmt: skip
        for name in ("learn_sigma", "sigma_small", "use_scale_shift_norm", "resblock_updown", "use_new_attention_order"):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"diffusion model: {name} is {getattr(self, name)!r}, expected true or false")  # fmt: skip
        self._check_shape()
        if not isinstance(self.cond_dim, int) or isinstance(self.cond_dim, bool) or not 0 <= self.cond_dim <= 4096:  # fmt: skip
            raise ValueError(f"diffusion model: cond_dim is {repr(self.cond_dim)[:40]}, expected an integer from 0 (unconditional) to 4096")  # fmt: skip
        if not isinstance(self.cond_clip, str) or bool(self.cond_dim) != bool(self.cond_clip) or len(self.cond_clip) > 4096:  # fmt: skip
            raise ValueError(f"diffusion model: cond_clip is {repr(self.cond_clip)[:40]} with cond_dim {self.cond_dim}, expected a CLIP's name exactly when cond_dim is above 0")  # fmt: skip
        if self.noise_schedule not in ("linear", "cosine"):
            raise ValueError(
                f"diffusion model: noise_schedule {self.noise_schedule!r}, expected 'linear' or "
                "'cosine'"
            )
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(
                f"diffusion model: image_size {self.image_size} does not halve "
                f"{len(self.channel_mult) - 1} times (channel_mult {self.channel_mult})"
            )

    def _check_shape(self) -> None:
        """Levels and widths that build: every width a multiple of the 32 groups of the group
        norms (heads that do not split a width are found by building on the meta device)."""
        mults, sides = self.channel_mult, self.attention_resolutions
        if not 0 < len(mults) <= 8 or not all(_is_real(m) and 0 < m <= 16 for m in mults):
            raise ValueError(f"diffusion model: channel_mult is {str(mults)[:60]}, expected 1 to 8 numbers in (0, 16]")  # fmt: skip
        if len(sides) > 16 or not all(isinstance(r, int) and 0 < r <= self.image_size for r in sides):  # fmt: skip
            raise ValueError(f"diffusion model: attention_resolutions is {str(sides)[:60]}, expected up to 16 sides from 1 to image_size")  # fmt: skip
        widths = {int(self.num_channels * m) for m in (1, *mults)}
        if any(w % 32 for w in widths):
            raise ValueError(f"diffusion model: widths {sorted(widths)} (num_channels x channel_mult) are not all multiples of 32, as the group norms need")  # fmt: skip
        heads = self.num_head_channels
        if not isinstance(heads, int) or isinstance(heads, bool) or not (heads == -1 or 0 < heads <= 1024):  # fmt: skip
            raise ValueError(f"diffusion model: num_head_channels is {str(heads)[:40]}, expected -1 or 1 to 1024")  # fmt: skip

    @property
    def factor(self) -> int:
        """Image pixels per side that the U-Net's downsamplings need the size to divide by."""
        return 2 ** (len(self.channel_mult) - 1)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"diffusion model: unknown flags {unknown}; expected some of {sorted(known)}"
            )
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"diffusion model: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# The largest value of each integer flag: OpenAI's largest published model (512x512, 256
# channels, 2 blocks, 4000 steps) well inside, a 10**400 or a 4096-wide U-Net refused.
_BOUNDS = {
    "image_size": 2048, "num_channels": 1024, "num_res_blocks": 8, "num_heads": 64,
    "diffusion_steps": 10_000,
}  # fmt: skip


def _number(text: str, name: str) -> float | int:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise ValueError(f"diffusion model: {name} holds {text[:20]!r}, expected numbers") from None  # fmt: skip


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class GroupNorm32(nn.GroupNorm):
    """Group norm computed in fp32 whatever the autocast, as OpenAI's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _norm(channels: int) -> nn.Module:
    return GroupNorm32(32, channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) sinusoidal embeddings (cosines, then sines)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


class Upsample(nn.Module):
    def __init__(self, channels: int, conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        if conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    def __init__(self, channels: int, conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        out = out_channels or channels
        self.op = nn.Conv2d(channels, out, 3, stride=2, padding=1) if conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Two convolutions with the timestep's embedding between them (as a scale and shift of
    the second's normalised input), optionally up- or downsampling, plus a skip."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        scale_shift: bool,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if scale_shift else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            _norm(out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the feature map's positions; ``legacy``: OpenAI's default layout of
    the heads inside the fused q, k, v channels (heads outermost)."""

    def __init__(self, channels: int, heads: int, legacy: bool) -> None:
        super().__init__()
        self.heads, self.legacy = heads, legacy
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # (B, 3C, T)
        length, ch = qkv.shape[-1], c // self.heads
        if self.legacy:
            q, k, v = qkv.reshape(b * self.heads, 3 * ch, length).split(ch, dim=1)
        else:
            q, k, v = (part.reshape(b * self.heads, ch, length) for part in qkv.chunk(3, dim=1))
        # (B * heads, ch, T) -> attention over T; softmax(q k / sqrt(ch)) as OpenAI's.
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = h.transpose(1, 2).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class Step(nn.ModuleList):
    """A sequence of blocks; the residual blocks also take the timestep's embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """OpenAI's ``UNetModel`` (2-D): (N, 3, H, W) and (N,) timesteps -> (N, 3 or 6, H, W): the
    noise, and with ``learn_sigma`` the variance's interpolation. With ``cond_dim``, also an
    (N, cond_dim) condition (a text embedding; zeros for none), projected into the time
    embedding as OpenAI's class labels are."""

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        self.spec = spec
        mc, emb = spec.num_channels, spec.num_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        if spec.cond_dim:
            self.cond_embed = nn.Linear(spec.cond_dim, emb)
        ch = int(spec.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([Step([nn.Conv2d(3, ch, 3, padding=1)])])
        chans, ds = [ch], 1
        attention = {spec.image_size // r for r in spec.attention_resolutions}  # as downsamplings

        def attend(channels: int) -> AttentionBlock:
            heads = spec.num_heads if spec.num_head_channels == -1 else channels // spec.num_head_channels  # fmt: skip
            return AttentionBlock(channels, heads, not spec.use_new_attention_order)

        def resize(channels: int, up: bool) -> nn.Module:
            if spec.resblock_updown:
                return ResBlock(channels, emb, channels, spec.use_scale_shift_norm, up, not up)
            return (Upsample if up else Downsample)(channels, True)

        for level, mult in enumerate(spec.channel_mult):
            for _ in range(spec.num_res_blocks):
                out = int(mult * mc)
                layers: list[nn.Module] = [ResBlock(ch, emb, out, spec.use_scale_shift_norm)]
                ch = out
                if ds in attention:
                    layers.append(attend(ch))
                self.input_blocks.append(Step(layers))
                chans.append(ch)
            if level != len(spec.channel_mult) - 1:
                self.input_blocks.append(Step([resize(ch, up=False)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Step(
            [
                ResBlock(ch, emb, ch, spec.use_scale_shift_norm),
                attend(ch),
                ResBlock(ch, emb, ch, spec.use_scale_shift_norm),
            ]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(spec.channel_mult))[::-1]:
            for i in range(spec.num_res_blocks + 1):
                out = int(mc * mult)
                layers = [ResBlock(ch + chans.pop(), emb, out, spec.use_scale_shift_norm)]
                ch = out
                if ds in attention:
                    layers.append(attend(ch))
                if level and i == spec.num_res_blocks:
                    layers.append(resize(ch, up=True))
                    ds //= 2
                self.output_blocks.append(Step(layers))
        out_channels = 6 if spec.learn_sigma else 3
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.spec.num_channels))
        if cond is not None:
            if not self.spec.cond_dim:
                raise ValueError("diffusion model: a condition given to an unconditional model")
            emb = emb + self.cond_embed(cond.to(emb.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def build_unet(spec: UNetSpec) -> UNet:
    """A randomly initialised U-Net of ``spec``'s architecture."""
    return UNet(spec)


def load_unet(path: str | Path, spec: UNetSpec, device: str | torch.device = "cpu") -> UNet:
    """Build ``spec``'s U-Net and load the state dict at ``path`` into it strictly, read
    weights-only (nothing in the file can run code), in eval mode without gradients."""
    state = load_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"diffusion model: {path} is not a U-Net state dict (expected parameter names "
            "mapped to tensors, as OpenAI's 256x256_diffusion_uncond.pt)"
        )
    try:  # the flags' model on the meta device first: nothing is allocated for a misfit
        check_fits(lambda: UNet(spec), state, "diffusion model", Path(path))
    except ValueError as error:
        raise ValueError(f"{error}; check the flags (image_size, num_channels, channel_mult, num_res_blocks, learn_sigma, ...)") from None  # fmt: skip
    model = UNet(spec)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device)


def save_unet(model: UNet, path: Path) -> None:
    """Save the weights as OpenAI does (a plain state dict) and the flags beside them (.json)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    write_atomic(path, buffer.getvalue())
    write_atomic(path.with_suffix(".json"), json.dumps(model.spec.to_dict(), indent=2).encode())
