"""Reading user images: any mode to RGB in [0, 1], upright, resized; clear errors otherwise."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.images import check_image, load_image, to_uint8


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
