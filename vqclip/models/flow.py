"""Optical flow: where each pixel of one frame went in the next, and where that can be trusted.

Estimators share one signature, ``estimate(a, b) -> (B, 2, H, W)``: for each pixel of ``a``
(images ``(B, 3, H, W)`` in [0, 1]) its displacement, in pixels (x, then y), to where it shows
in ``b``. Built in:

- ``dis``: OpenCV's DIS optical flow (Kroeger et al. 2016): no weights, the offline default;
- ``raft_small``, ``raft_large``: torchvision's RAFT architectures, their weights fetched by
  vqclip's downloader from the registry and read weights-only (torchvision's own download path
  unpickles).

A plugin adds one with :func:`vqclip.core.plugins.register_estimator` (kind ``"flow"``).
:func:`warp` moves an image along a flow; :func:`consistent` is the forward-backward check of
Ruder et al. (2016), which marks the occluded pixels and the motion boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vqclip.core import plugins
from vqclip.models.checkpoints import load_weights

__all__ = ["FlowFn", "FLOW_ESTIMATORS", "check_flow_estimator", "flow_estimator", "dis_flow", "load_raft", "warp", "consistent", "flows", "in_between"]  # fmt: skip

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RAFT_MIN = 128  # RAFT's encoders downsample 8 times and its correlation pyramid 4 more levels
RAFT_UPDATES = 12  # torchvision's default refinement iterations
_NO_OPENCV = (
    "flow_estimator: 'dis' needs OpenCV: pip install 'vqclip[flow]' (opencv-python-headless; "
    "Colab already has OpenCV)"
)


def _gray(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) uint8 luma, as DIS reads frames."""
    weights = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (image.float().mul(weights).sum(0) * 255).round().clamp(0, 255).byte().cpu().numpy()


def dis_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """OpenCV's DIS flow from each image of ``a`` to the same of ``b``, (B, 2, H, W)."""
    try:
        import cv2
    except ImportError:
        raise ValueError(_NO_OPENCV) from None
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    out = [torch.from_numpy(dis.calc(_gray(x), _gray(y), None)) for x, y in zip(a, b, strict=True)]
    return torch.stack(out).permute(0, 3, 1, 2).to(a.device, torch.float32)


def load_raft(path: str | Path, large: bool, device: torch.device | str = "cpu") -> FlowFn:
    """torchvision's RAFT (``large`` or small) with the weights at ``path`` (a state dict in
    torchvision's file format, read weights-only), as an estimator on ``device``."""
    from torchvision.models.optical_flow import raft_large, raft_small

    model = (raft_large if large else raft_small)(weights=None, progress=False)
    state = load_weights(path, "flow_estimator")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        kind = "raft_large" if large else "raft_small"
        detail = " ".join(str(error).split())[:200]
        raise ValueError(f"flow_estimator: {path} is not {kind}'s state dict ({detail})") from None
    model = model.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def estimate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        height, width = a.shape[-2:]
        # Sizes RAFT cannot take are padded (edge pixels repeated), not refused.
        pad_h = max(RAFT_MIN, -(-height // 8) * 8) - height
        pad_w = max(RAFT_MIN, -(-width // 8) * 8) - width
        pads = (0, pad_w, 0, pad_h)
        x, y = (F.pad(t.float().to(device) * 2 - 1, pads, mode="replicate") for t in (a, b))
        flow = model(x, y, num_flow_updates=RAFT_UPDATES)[-1]
        return flow[..., :height, :width].to(a.device)

    return estimate


# The built-in estimators, with what the help says of each.
FLOW_ESTIMATORS = {
    "dis": "OpenCV's DIS (no weights; the default)",
    "raft_small": "torchvision's RAFT small (4 MB of weights from the registry)",
    "raft_large": "torchvision's RAFT large (20 MB of weights from the registry)",
}


def check_flow_estimator(name: str) -> None:
    """A flow estimator that this machine can run: known (built in or a plugin's), and for
    ``dis``, OpenCV installed."""
    if name == "dis":
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise ValueError(_NO_OPENCV) from None
    elif name not in FLOW_ESTIMATORS and name not in plugins.estimators("flow"):
        known = sorted({*FLOW_ESTIMATORS, *plugins.estimators("flow")})
        raise ValueError(f"flow_estimator: unknown estimator {name!r}; expected one of {known}")


def flow_estimator(
    name: str, device: torch.device | str = "cpu", path: Path | None = None
) -> FlowFn:
    """The flow estimator called ``name``: built in (RAFT's weights at ``path``, default the
    registry's, fetched), or a plugin's."""
    if name == "dis":
        return dis_flow
    if name in FLOW_ESTIMATORS:
        from vqclip.models.registry import resolve_flow

        return load_raft(path or resolve_flow(name), name == "raft_large", device)
    plugged = plugins.estimators("flow")
    if name not in plugged:
        known = sorted({*FLOW_ESTIMATORS, *plugged})
        raise ValueError(f"flow_estimator: unknown estimator {name!r}; expected one of {known}")
    return plugged[name].load(device)


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """Pixel centres displaced by ``flow`` (B, 2, H, W), as grid_sample's [-1, 1] grid."""
    _, _, height, width = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=flow.dtype, device=flow.device),
        torch.arange(width, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    x = (xs + flow[:, 0] + 0.5) * (2 / width) - 1
    y = (ys + flow[:, 1] + 0.5) * (2 / height) - 1
    return torch.stack([x, y], dim=-1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` sampled where ``flow`` points: for a flow from frame b to frame a, frame a's
    pixels moved to where they show in b (backward warping; edges repeated)."""
    grid = _grid(flow.to(image.dtype))
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def consistent(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): 1 where ``forward`` (a to b, at a's pixels) is confirmed by ``backward`` (b
    to a): the round trip returns (|w + w'|² <= 0.01 (|w|² + |w'|²) + 0.5) and the pixel is not
    on a motion boundary (|∇w|² <= 0.01 |w|² + 0.002), as Ruder et al.; 0 elsewhere."""
    back = warp(backward, forward)  # b->a flow, read where each pixel of a went
    round_trip = (forward + back).square().sum(1)
    bound = 0.01 * (forward.square().sum(1) + back.square().sum(1)) + 0.5
    dx = F.pad(forward[..., :, 1:] - forward[..., :, :-1], (0, 1))
    dy = F.pad(forward[..., 1:, :] - forward[..., :-1, :], (0, 0, 0, 1))
    edge = dx.square().sum(1) + dy.square().sum(1) > 0.01 * forward.square().sum(1) + 0.002
    return ((round_trip <= bound) & ~edge).unsqueeze(1).float()


def flows(estimate: FlowFn, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flows a -> b and b -> a."""
    return estimate(a, b), estimate(b, a)


def in_between(
    a: torch.Tensor, b: torch.Tensor, times: list[float], estimate: FlowFn
) -> list[torch.Tensor]:
    """Frames at ``times`` (each in (0, 1)) between ``a`` and ``b`` ((1, 3, H, W) in [0, 1]):
    both neighbours warped toward time t along the flow (the flow at t approximated from the
    two, as Jiang et al.'s Super SloMo does), blended by nearness and occlusion-aware: where a
    pixel of one neighbour has no counterpart in the other (its flow fails the consistency
    check), the other's sample is trusted less."""
    ahead, back = flows(estimate, a, b)  # a -> b at a's pixels; b -> a at b's
    holds_a, holds_b = consistent(ahead, back), consistent(back, ahead)
    out = []
    for t in times:
        to_a = -(1 - t) * t * ahead + t * t * back  # from time t to a, at t's pixels
        to_b = (1 - t) * (1 - t) * ahead - t * (1 - t) * back
        weight_a = (1 - t) * (warp(holds_b, to_b) + 1e-3)  # b's pixel has no match in a: not a
        weight_b = t * (warp(holds_a, to_a) + 1e-3)
        blend = weight_a * warp(a, to_a) + weight_b * warp(b, to_b)
        out.append((blend / (weight_a + weight_b)).clamp(0, 1))
    return out
