"""Reading user images: any mode to RGB in [0, 1], upright, resized; clear errors otherwise."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.core.images import check_image, load_image, to_uint8


def test_modes_become_rgb_in_0_1_and_round_trip_to_uint8(tmp_path: Path) -> None:
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # (H, W, 3)
    Image.fromarray(pixels).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    image = load_image(tmp_path / "rgba.png")
    assert image.shape == (1, 3, 4, 6) and image.dtype == torch.float32
    assert np.array_equal(to_uint8(image[0]), pixels)
    grey = load_image(tmp_path / "grey.png")
    assert grey.shape == (1, 3, 4, 6) and torch.equal(grey[:, 0], grey[:, 2])


def test_size_is_width_then_height(tmp_path: Path) -> None:
    Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / "red.png")
    image = load_image(tmp_path / "red.png", (8, 4))
    assert image.shape == (1, 3, 4, 8)
    torch.testing.assert_close(image[0, :, 2, 3], torch.tensor([1.0, 0.0, 0.0]))


def test_a_cameras_exif_orientation_is_applied(tmp_path: Path) -> None:
    # A phone stores a portrait photo landscape, with EXIF orientation 6 ("turn 90° clockwise
    # to view"): the init image must be the upright one that a viewer shows.
    stored = np.zeros((4, 6, 3), dtype=np.uint8)  # (H=4, W=6)
    stored[0, :] = 255  # white top row as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    image = load_image(tmp_path / "phone.jpg")
    assert image.shape == (1, 3, 6, 4)  # upright: taller than wide
    # turned clockwise, the stored top row becomes the right-hand column
    assert image[0, :, :, -1].mean() > 0.9 and image[0, :, :, 0].mean() < 0.1


def test_bad_image_files_name_the_field_and_the_path(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    cases = {
        tmp_path / "missing.png": "does not exist",
        tmp_path / "notes.png": "is not a readable image",
        tmp_path: "is a directory",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=f"init_image: .*{message}") as error:
            check_image(path, "init_image")
        assert str(path) in str(error.value)


def test_a_16_bit_greyscale_image_is_scaled_not_clipped(tmp_path: Path) -> None:
    """Issue 45: PIL's convert("RGB") clipped 16-bit samples at 255: mid grey read as white."""
    ramp = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)  # (1, 4)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode.startswith("I")  # read back as PIL's wide greyscale
    loaded = load_image(tmp_path / "grey16.png")
    expected = torch.tensor([0, 64, 128, 255]) / 255
    torch.testing.assert_close(loaded[0, 0, 0], expected, atol=1 / 255, rtol=0)
    assert torch.equal(loaded[0, 0], loaded[0, 2])
