"""Optical flow on synthetic motion made here: the estimate, the warp and the consistency mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqclip.models.flow import (
    check_flow_estimator,
    consistent,
    dis_flow,
    flow_estimator,
    flows,
    warp,
)

SIZE = 96


def _texture(height: int, width: int, seed: int, cell: int = 8) -> torch.Tensor:
    """Smooth random colour, (1, 3, H, W) in [0, 1]: structure at every place for the flow."""
    noise = torch.rand(1, 3, height // cell + 3, width // cell + 3, generator=torch.Generator().manual_seed(seed))  # fmt: skip
    big = F.interpolate(noise, scale_factor=cell, mode="bicubic", align_corners=False)
    return big[..., cell : cell + height, cell : cell + width].clamp(0, 1)


def _disc_scene(cx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured red disc of radius 18 centred at (cx, 48) over a static textured background;
    the disc's texture moves with it. Returns the image and the disc's mask (H, W)."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    inside = ((xs - cx) ** 2 + (ys - 48) ** 2 < 18**2).float()
    texture = torch.roll(_texture(SIZE, SIZE, 3), shifts=int(cx - 40), dims=-1)
    disc = texture * 0.5 + torch.tensor([0.5, 0.0, 0.0]).view(1, 3, 1, 1)
    return _texture(SIZE, SIZE, 2) * 0.6 * (1 - inside) + disc * inside, inside.bool()


def test_dis_recovers_a_pan_and_a_moving_object_and_the_mask_marks_what_is_uncovered() -> None:
    # A pan: the whole view moves 2 px right and 1 px down.
    world = _texture(SIZE + 20, SIZE + 20, 1)
    a, b = world[..., 5 : 5 + SIZE, 5 : 5 + SIZE], world[..., 4 : 4 + SIZE, 3 : 3 + SIZE]
    flow = dis_flow(a, b)
    truth = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    pan_error = (flow - truth).norm(dim=1)[..., 8:-8, 8:-8].mean().item()  # edges leave view
    # An object: the disc moves 4 px right over a background that stays.
    (first, was), (second, now) = _disc_scene(40), _disc_scene(44)
    ahead = dis_flow(first, second)
    truth = torch.zeros_like(ahead)
    truth[:, 0] = 4.0 * was
    object_error = (ahead - truth).norm(dim=1)[0][was].mean().item()
    # At the second frame's pixels: where each was in the first, and whether that holds.
    back, forth = flows(dis_flow, second, first)
    holds = consistent(back, forth)[0, 0].bool()
    uncovered = was & ~now  # background the disc no longer hides
    still = ~was & ~now
    print(f"end-point error: pan {pan_error:.3f} px, object {object_error:.3f} px; mask 0 on "
          f"{(~holds[uncovered]).float().mean():.0%} of the uncovered, 1 on {holds[still].float().mean():.0%} of the still background")  # fmt: skip
    assert pan_error < 0.25 and object_error < 1.0
    assert (~holds[uncovered]).float().mean() > 0.6  # measured 79%
    assert holds[still].float().mean() > 0.75  # measured 89%
    # The previous frame warped along the estimate matches this one better than unwarped.
    assert (warp(first, back) - second).abs().mean() < 0.5 * (first - second).abs().mean()


def test_warping_by_a_known_flow_moves_the_pixels() -> None:
    image = torch.zeros(1, 1, 8, 8)
    image[..., 2, 3] = 1.0
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = -2.0  # each pixel reads the one 2 to its left: the content moves 2 right
    assert warp(image, flow)[0, 0].nonzero().tolist() == [[2, 5]]


def test_an_unknown_estimator_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"flow_estimator: unknown estimator 'farneback'; expected one of \['dis', 'raft_large', 'raft_small'"):  # fmt: skip
        check_flow_estimator("farneback")
    with pytest.raises(ValueError, match="flow_estimator: unknown estimator"):
        flow_estimator("farneback")


def test_a_plugins_flow_estimator_is_used_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from vqclip.core import plugins

    def still(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(a), 2, *a.shape[-2:])

    monkeypatch.setattr(plugins, "_ESTIMATORS", dict(plugins._ESTIMATORS))  # undone after
    plugins.register_estimator(plugins.Estimator("still", "flow", "no motion", lambda device="cpu": still))  # fmt: skip
    check_flow_estimator("still")
    assert flow_estimator("still") is still
