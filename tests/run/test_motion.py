"""The camera's moves against their formulas: the 2D move of a picture and the 3D pinhole warp."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.core.images import to_uint8
from vqclip.frontends import cli
from vqclip.run.frames import frame_paths
from vqclip.run.motion import (
    FAR,
    NEAR,
    TRANSLATION_SCALE,
    calibration_card,
    normalised_depth,
    plane_depth,
    warp_2d,
    warp_3d,
)  # fmt: skip
from vqclip.run.video import count_video_frames


def test_a_moved_frame_starts_with_its_scheduled_contrast_and_noise() -> None:
    """frame_contrast scales each frame's difference from its mean colour; frame_noise adds
    grain of that standard deviation in half a pixel's range, drawn from the seed and the frame
    alone; at their defaults the moved frame is the start as it is."""
    from vqclip.core.config import GenerationConfig
    from vqclip.run.motion import CameraPath

    base = GenerationConfig(prompts="a", animation_mode="2D", max_frames=4, seed=3)
    image = torch.linspace(0.3, 0.7, 64).repeat(1, 3, 64, 1)  # grey, brighter to the right
    assert CameraPath(base).start(image, 1) is image
    path = CameraPath(base.replace(frame_contrast="2", frame_noise="0: (0), 2: (0.2)"))
    contrasted = (image - 0.5) * 2 + 0.5  # the mean is 0.5
    grain = path.start(image, 1) - contrasted  # frame 1: noise 0.1, a deviation of 0.05
    assert abs(float(grain.mean())) < 0.005 and abs(float(grain.std()) - 0.05) < 0.003
    assert torch.equal(
        path.start(image, 1), CameraPath(path.config).start(image, 1)
    )  # reproducible
    assert not torch.equal(path.start(image, 2) - contrasted, 2 * grain)  # each frame its own draw
    assert path.values(1) == {"zoom": 1.0, "angle": 0.0, "translation_x": 0.0, "translation_y": 0.0, "frame_noise": 0.1, "frame_contrast": 2.0}  # fmt: skip


def test_wrap_brings_in_at_one_side_what_leaves_the_other() -> None:
    image = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    moved = warp_2d(image, 1.0, 0.0, (3, -2), padding_mode="wrap")  # right 3, up 2: a roll
    assert torch.allclose(moved, image.roll((-2, 3), (-2, -1)), atol=1e-5)
    half = warp_2d(image, 1.0, 0.0, (0.5, 0), padding_mode="wrap")  # across the seam too
    assert torch.allclose(half, (image + image.roll(1, -1)) / 2, atol=1e-5)
    for mode in ("bicubic", "nearest"):
        assert torch.allclose(warp_2d(image, 1.0, 0.0, (5, 0), "wrap", mode), image.roll(5, -1), atol=1e-5)  # fmt: skip
    # 3D: the camera moving right over a plane moves the picture left by the pinhole's amount,
    # what leaves at the left coming in at the right.
    focal = 1 / math.tan(math.radians(40) / 2)
    shift = -focal * 30 * TRANSLATION_SCALE / NEAR * 16 / 2  # half the shorter side: 8 pixels
    slid = warp_3d(image, plane_depth(image), translation=(30.0, 0.0, 0.0), padding_mode="wrap")
    assert torch.allclose(slid, warp_2d(image, 1.0, 0.0, (shift, 0.0), padding_mode="wrap"), atol=1e-4)  # fmt: skip


def test_warp_2d_moves_zooms_and_turns() -> None:
    image = torch.rand(2, 3, 8, 12)
    assert torch.allclose(warp_2d(image, 1.0), image, atol=1e-6)
    square = image[..., :8]
    assert torch.allclose(warp_2d(square, 1.0, angle=90), torch.rot90(square, 1, (2, 3)), atol=1e-6)  # fmt: skip
    moved = warp_2d(image, 1.0, translation=(2, 1))  # 2 right, 1 down
    assert torch.allclose(moved[..., 1:, 2:], image[..., :-1, :-2], atol=1e-6)
    ramp = torch.arange(12.0).expand(1, 3, 8, 12)  # bilinear sampling is exact on a ramp
    steps = warp_2d(ramp, 2.0).diff(dim=-1)[..., 2:-2]
    assert torch.allclose(steps, torch.tensor(0.5), atol=1e-5)  # twice as large: half the slope


def _centre_x(image: torch.Tensor, rows: slice) -> float:
    """The x (pixels, from the left edge) of the bright mass in ``rows``."""
    weight = image[0, 0, rows].double()
    xs = torch.arange(image.shape[-1], dtype=torch.float64) + 0.5
    return float((weight * xs).sum() / weight.sum())


def test_near_pixels_move_more_than_far_ones_by_the_pinhole_formula() -> None:
    """A scene of two depths (top half at 1, bottom at 3) with a bright bar in each: a camera
    moving right moves each bar left by focal * T / depth, in half-sides of the image."""
    height = width = 96
    image = torch.zeros(1, 3, height, width)
    image[..., 10:40, 44:52] = 1.0  # near bar
    image[..., 56:86, 44:52] = 1.0  # far bar
    depth = torch.full((1, 1, height, width), 3.0)
    depth[..., :48, :] = 1.0
    fov, move = 40.0, 12.0
    out = warp_3d(image, depth, translation=(move, 0, 0), fov=fov, padding_mode="zeros")
    focal, half = 1 / math.tan(math.radians(fov) / 2), width / 2
    for rows, d in ((slice(0, 48), 1.0), (slice(48, 96), 3.0)):
        shift = _centre_x(out, rows) - _centre_x(image, rows)
        predicted = -focal * move * TRANSLATION_SCALE / d * half
        assert abs(shift - predicted) < 0.05, (d, shift, predicted)
    assert abs(_centre_x(out, slice(0, 48)) - 48) > 2.5 * abs(_centre_x(out, slice(48, 96)) - 48)


def test_moving_forward_enlarges_a_plane_by_depth_over_the_new_depth() -> None:
    image = calibration_card(128, 128)
    red = image[0, 0] > 0.8
    for forward in (20.0, -20.0):  # toward the plane at NEAR, and away
        out = warp_3d(image, plane_depth(image), translation=(0, 0, forward), padding_mode="zeros")
        grown = ((out[0, 0] > 0.8) & (out[0, 1] < 0.4)).sum() / red.sum()
        factor = NEAR / (NEAR - forward * TRANSLATION_SCALE)
        assert abs(math.sqrt(float(grown)) - factor) < 0.02, (forward, float(grown) ** 0.5, factor)


def test_a_turn_needs_no_depth_and_a_roll_is_a_rotation() -> None:
    image = torch.rand(1, 3, 32, 32)
    near, far = plane_depth(image), torch.full((1, 1, 32, 32), FAR)
    pan = warp_3d(image, near, rotation_3d=(0, 5, 0))
    assert torch.allclose(pan, warp_3d(image, far, rotation_3d=(0, 5, 0)), atol=1e-5)
    rolled = warp_3d(image, near, rotation_3d=(0, 0, 90))  # the camera clockwise, the scene not
    assert torch.allclose(rolled, torch.rot90(image, 1, (2, 3)), atol=1e-5)
    assert torch.allclose(warp_3d(image, near), image, atol=1e-5)


def test_a_depth_map_is_normalised_and_a_useless_one_is_a_plane() -> None:
    raw = torch.stack([torch.linspace(5, 9, 16).view(1, 4, 4), torch.full((1, 4, 4), 7.0)])
    raw[1, 0, 0, 0] = float("nan")
    depth = normalised_depth(raw)
    assert (depth[0].min().item(), depth[0].max().item()) == (NEAR, FAR)
    assert torch.equal(depth[1], torch.full((1, 4, 4), NEAR))


def test_the_preview_moves_the_card_with_no_model_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--preview_motion`` with 3D through the shapes world's depth estimator, while the CLIP
    and VQGAN named do not exist: nothing but the camera path is run."""
    cli.main([
        "generate", "a tunnel", "--preview_motion", "--animation_mode", "3D", "--max_frames", "4",
        "--depth_model", "shapes-depth", "--translation_z", "0: (0), 3: (30)", "--rotation_3d_z",
        "2", "--clip_model", "nowhere.pt", "--vqgan", "nowhere.yaml", "--width", "64",
        "--height", "48", "--seed", "3", "--output_dir", str(tmp_path), "--video",
    ])  # fmt: skip
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("frame ")]
    assert len(lines) == 4 and "translation_z 20" in lines[2] and "rotation_3d_z 2" in lines[1]
    (run,) = tmp_path.iterdir()
    frames = frame_paths(run)
    assert [p.name for p in frames] == [f"{i:06d}.png" for i in range(4)]
    first = np.asarray(Image.open(frames[0]))
    assert np.array_equal(first, to_uint8(calibration_card(64, 48)[0]))
    assert all(not np.array_equal(first, np.asarray(Image.open(p))) for p in frames[1:])
    assert json.loads(Image.open(frames[3]).text["motion"])["translation_z"] == 30.0
    assert count_video_frames(run / "video.mp4") == 4
