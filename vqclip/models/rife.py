"""RIFE, a learned frame interpolator (Huang et al., "Real-Time Intermediate Flow Estimation
for Video Frame Interpolation", ECCV 2022), in the layout of Practical-RIFE 4.25's published
weights (MIT).

The network never computes the flow between the two frames: from both frames, the time ``t``
and a 4-channel feature of each frame (``Head``), five blocks estimate the flows from time t
back to each frame and a blend mask, coarse to fine (the frames seen at 1/16, 1/8, ... of
their size); each later block sees the frames and features warped by the flows so far and adds
a correction. The frame at t is the two frames warped along their flows, blended by the mask.
Written here from the paper and the names and shapes of the published file's tensors; read
weights-only from safetensors (:func:`vqclip.models.checkpoints.load_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.models.checkpoints import load_weights

__all__ = ["IFNet", "load_rife", "Interpolate", "PARAMETERS"]

Interpolate = Callable[[torch.Tensor, torch.Tensor, list[float]], list[torch.Tensor]]
SCALES = (16, 8, 4, 2, 1)  # each block's view of the frames, coarse to fine
MULTIPLE = 128  # frames are padded to a multiple of this: the coarsest block divides by 64
WIDTHS = (192, 128, 96, 64, 32)  # each block's channels
FEATURES = 4  # channels of each frame's feature
CARRIED = 8  # channels a block hands the next beside its flow and mask
PARAMETERS = 5_664_776  # the published file's: 22,674,392 bytes, fp32 with its header


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class Head(nn.Module):
    """A frame's feature at full size: three convolutions at half size, one transposed up."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, FEATURES, 4, 2, 1)
        self.relu = _leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        return self.cnn3(self.relu(self.cnn2(x)))


class ResConv(nn.Module):
    """A residual convolution whose branch is scaled per channel by a learned ``beta``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = _leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One scale: the inputs at 1/``scale`` of their size, down 4 times more, eight residual
    convolutions, back up; out come the flows (4 channels: t -> frame 0, t -> frame 1, each
    x then y, in pixels), the mask's logit and the carried channels."""

    def __init__(self, inputs: int, width: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(
            nn.Sequential(nn.Conv2d(inputs, width // 2, 3, 2, 1), _leaky()),
            nn.Sequential(nn.Conv2d(width // 2, width, 3, 2, 1), _leaky()),
        )
        self.convblock = nn.Sequential(*(ResConv(width) for _ in range(8)))
        self.lastconv = nn.Sequential(
            nn.ConvTranspose2d(width, 4 * (5 + CARRIED), 4, 2, 1), nn.PixelShuffle(2)
        )

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None, scale: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)
        if flow is not None:  # the flow so far, in the smaller image's pixels
            small = F.interpolate(flow, scale_factor=1 / scale, mode="bilinear", align_corners=False)  # fmt: skip
            x = torch.cat([x, small / scale], 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


def _warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` sampled at each pixel displaced by ``flow`` (pixels; corners aligned, edges
    repeated, as the network was trained)."""
    _, _, height, width = flow.shape
    ys = torch.linspace(-1, 1, height, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1, 1, width, device=flow.device, dtype=flow.dtype)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2): x, y
    shift = torch.stack([flow[:, 0] * (2 / (width - 1)), flow[:, 1] * (2 / (height - 1))], -1)
    grid = base + shift
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """The interpolator: ``IFNet()(a, b, t)`` is the frame at time ``t`` in (0, 1) between
    ``a`` and ``b`` ((B, 3, H, W) in [0, 1], H and W multiples of :data:`MULTIPLE`)."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = Head()
        first = 3 + 3 + 2 * FEATURES + 1  # both frames, their features, t
        later = first + 1 + CARRIED + 4  # and the mask, the carried channels, the flows
        for i, width in enumerate(WIDTHS):
            self.add_module(f"block{i}", IFBlock(first if i == 0 else later, width))

    def forward(self, a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
        time = a.new_full((len(a), 1, *a.shape[-2:]), float(t))
        fa, fb = self.encode(a), self.encode(b)
        flow = mask = carried = None
        seen_a, seen_b = a, b
        for i, scale in enumerate(SCALES):
            block = getattr(self, f"block{i}")
            if flow is None:
                flow, mask, carried = block(torch.cat([a, b, fa, fb, time], 1), None, scale)
            else:
                wa, wb = _warp(fa, flow[:, :2]), _warp(fb, flow[:, 2:])
                inputs = torch.cat([seen_a, seen_b, wa, wb, time, mask, carried], 1)
                delta, mask, carried = block(inputs, flow, scale)
                flow = flow + delta
            seen_a, seen_b = _warp(a, flow[:, :2]), _warp(b, flow[:, 2:])
        weight = torch.sigmoid(mask)
        return seen_a * weight + seen_b * (1 - weight)


def load_rife(path: str | Path, device: torch.device | str = "cpu") -> Interpolate:
    """The interpolator with the weights at ``path`` (safetensors or a weights-only
    ``torch.save``), as ``interpolate(a, b, times)`` -> the frames at ``times`` between ``a``
    and ``b`` ((1, 3, H, W) in [0, 1]; any size: padded with zeros to :data:`MULTIPLE`, as
    RIFE's own inference pads)."""
    state = load_weights(path, "interpolation")
    model = IFNet()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))[:3]
        raise ValueError(
            f"interpolation: {path} is not RIFE 4.25's IFNet (expected its {len(expected)} "
            f"tensors; differs at {', '.join(name for name, _ in wrong)})"
        )
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ValueError(f"interpolation: {path} holds weights that are NaN or infinite")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model = model.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def interpolate(a: torch.Tensor, b: torch.Tensor, times: list[float]) -> list[torch.Tensor]:
        height, width = a.shape[-2:]
        pads = (0, -width % MULTIPLE, 0, -height % MULTIPLE)
        x, y = (F.pad(frame.float().to(device), pads) for frame in (a, b))
        return [model(x, y, t)[..., :height, :width].clamp(0, 1).to(a.device) for t in times]

    return interpolate
