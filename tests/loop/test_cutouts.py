"""Cutouts in one batched resampling, and every named augmentation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqclip.core.config import AUGMENTS, GenerationConfig
from vqclip.loop.cutouts import augment, make_augments, make_cutouts, shift_hue


def test_cutouts_are_crops_of_the_image_reproducible_by_generator() -> None:
    image = torch.rand(2, 3, 48, 40)
    cuts = make_cutouts(image, 16, 5, 1.0, torch.Generator().manual_seed(0))
    assert cuts.shape == (10, 3, 16, 16)  # (B * cutn, 3, S, S), image-major
    assert cuts.min() >= 0 and cuts.max() <= 1
    again = make_cutouts(image, 16, 5, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(cuts, again)
    other = make_cutouts(image, 16, 5, 1.0, torch.Generator().manual_seed(1))
    assert not torch.equal(cuts, other)
    flat = torch.full((1, 3, 48, 40), 0.25)  # a crop of a flat image is flat
    assert torch.allclose(make_cutouts(flat, 16, 5, 1.0, torch.Generator()), torch.tensor(0.25))


def test_pooling_cutouts_are_the_whole_image_pooled_and_draw_nothing() -> None:
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    image = torch.rand(2, 3, 48, 40)
    cuts = make_cutouts(image, 16, 5, 1.0, generator, method="pooling")
    assert cuts.shape == (10, 3, 16, 16) and torch.equal(generator.get_state(), state)
    assert torch.equal(cuts[0], cuts[4]) and not torch.equal(cuts[4], cuts[5])  # image-major
    square = torch.tensor([[0.0, 0.2], [0.4, 1.0]]).expand(1, 3, 2, 2)
    one = make_cutouts(square, 1, 3, 1.0, generator, method="pooling")
    assert torch.allclose(one, torch.tensor((0.4 + 1.0) / 2))  # (mean + max) / 2
    with pytest.raises(ValueError, match="cut_method: unknown value 'random'.*'pooling'"):
        GenerationConfig(cut_method="random")


@pytest.mark.parametrize("name", AUGMENTS)
def test_each_augmentation_runs_with_gradients_and_is_seeded(name: str) -> None:
    augments = make_augments((name,), 32)
    cutouts = torch.rand(16, 3, 32, 32, requires_grad=True)
    out = augment(cutouts, augments, 0.0, torch.Generator(), seed=3)
    assert out.shape == cutouts.shape
    assert not torch.equal(out, cutouts)  # some of the 16 were changed
    out.square().sum().backward()
    assert cutouts.grad is not None and cutouts.grad.abs().sum() > 0
    again = augment(cutouts.detach(), augments, 0.0, torch.Generator(), seed=3)
    assert torch.equal(out.detach(), again)


def test_shift_hue_is_kornias_hue_with_its_gradient() -> None:
    import kornia.enhance

    g = torch.Generator().manual_seed(0)
    image = torch.rand(6, 3, 16, 16, generator=g)
    radians = torch.tensor([-math.pi, -2.0, -0.3, 0.0, 0.7, 3.0])
    ours, theirs = image.clone().requires_grad_(True), image.clone().requires_grad_(True)
    shifted = shift_hue(ours, radians)
    expected = kornia.enhance.adjust_hue(theirs, radians)
    assert torch.allclose(shifted, expected, atol=1e-5)
    assert not torch.allclose(shifted[2], image[2], atol=0.01)  # it did turn the hue
    weights = torch.rand(shifted.shape, generator=g)
    (shifted * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-4)
    grey = torch.full((1, 3, 4, 4), 0.3)  # no chroma: no hue to turn, and no division by it
    assert torch.equal(shift_hue(grey, torch.tensor([1.0])), grey)


def test_fast_colour_jitter_draws_and_computes_as_kornias() -> None:
    image = torch.rand(16, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    fast, stock = make_augments(("Ji",), 24), make_augments(("Ji",), 24, fast=False)
    for seed in range(3):
        torch.manual_seed(seed)
        ours = fast(image)
        torch.manual_seed(seed)
        assert torch.allclose(ours, stock(image), atol=1e-5)
        assert not torch.allclose(ours, image, atol=0.01)


def test_an_unknown_augmentation_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="augments: unknown value 'Xx'.*'Gb'"):
        GenerationConfig(augments=("Af", "Xx"))


def test_region_crops_are_the_named_boxes_of_the_image() -> None:
    from vqclip.core.prompts import REGIONS
    from vqclip.loop.optimise import region_crops

    image = torch.arange(6 * 8.0).view(1, 1, 6, 8).expand(1, 3, 6, 8)
    whole, left, top_right = region_crops(image, (REGIONS["left"], REGIONS["top-right"]))
    assert torch.equal(whole, image)
    assert torch.equal(left, image[..., :, :4]) and torch.equal(top_right, image[..., :3, 4:])
    (tiny,) = region_crops(image, ((0.5, 0.5, 0.5, 0.5),))[1:]  # an empty box keeps one pixel
    assert tiny.shape[-2:] == (1, 1)


def test_overview_views_are_the_whole_image_padded_square_grey_and_mirrored() -> None:
    from vqclip.loop.cutouts import greyscale, overview_cutouts

    image = torch.zeros(1, 3, 16, 32)
    image[:, 0, :, :16] = 1.0  # red left half
    image[:, 2, :, 16:] = 1.0  # blue right half
    plain, grey, mirror, mirror_grey = overview_cutouts(image, 8, 4)
    assert plain[:, 0].abs().max() == 0 and plain[:, -1].abs().max() == 0  # padded: black
    assert plain[0, 4, 1] > 0.9 and plain[2, 4, 6] > 0.9  # red left, blue right
    assert mirror[2, 4, 1] > 0.9 and mirror[0, 4, 6] > 0.9  # mirrored
    assert torch.equal(grey, greyscale(plain)) and torch.equal(mirror_grey, greyscale(mirror))
    assert torch.equal(grey[0], grey[1]) and not torch.equal(plain[0], plain[1])
    many = overview_cutouts(image, 8, 6)  # more than Disco's four: copies, for the augments
    assert len(many) == 6 and all(torch.equal(view, plain) for view in many)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("[12]*400+[4]*600", [12.0] * 400 + [4.0] * 600),  # Disco's cut_overview default
        ("[2]*400+[4]*600", [2.0] * 400 + [4.0] * 600),  # its cut_innercut
        ("[0.2]*400+[0]*600", [0.2] * 400 + [0.0] * 600),  # its cut_icgray_p
        ("[1, 2]*2 + [3]", [1.0, 2.0, 1.0, 2.0, 3.0]),
        ("6", [6.0]),
    ],
)
def test_discos_step_lists_read_as_disco_reads_them(text: str, values: list) -> None:
    from vqclip.core.schedules import parse_step_list, step_value

    assert list(parse_step_list(text, "cut_overview")) == values
    listed = parse_step_list("[12]*400+[4]*600", "cut_overview")
    assert [step_value(listed, step, 200) for step in (0, 79, 80, 199)] == [12, 12, 4, 4]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cut_overview": "[4]"}, "cut_overview, cut_innercut: give both"),
        ({"cut_overview": "[0]", "cut_innercut": "[0]*3+[2]"}, "no cuts at step 0"),
        ({"cut_overview": "[2.5]", "cut_innercut": "[2]"}, "cut_overview: expected whole numbers"),
        ({"cut_overview": "__import__('os')", "cut_innercut": "[2]"}, "is not a list term"),
        ({"cut_overview": "[1]*99999", "cut_innercut": "[2]"}, "over 10000 entries"),
        ({"cut_icgray_p": "[0.5]"}, "cut_icgray_p: is for a cut schedule"),
        (
            {"cut_overview": "[1]", "cut_innercut": "[2]", "cut_icgray_p": "[2]"},
            "cut_icgray_p: expected shares",
        ),  # fmt: skip
        (
            {"cut_overview": "[1]", "cut_innercut": "[2]", "max_iterations": -1},
            "give a number of steps, not -1",
        ),  # fmt: skip
    ],
)
def test_a_bad_cut_schedule_is_one_clear_line(tiny_config, changes: dict, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        tiny_config.replace(**changes)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(alphabet="[]*+,.0123456789 -eE_ainf()x", max_size=60))
def test_any_step_list_is_one_clear_error_or_finite_numbers(text: str) -> None:
    from vqclip.core.schedules import MAX_STEPS_LISTED, parse_step_list

    try:
        values = parse_step_list(text, "cut_overview")
    except ValueError as error:
        assert str(error).startswith("cut_overview: ") and "\n" not in str(error)
    else:
        assert 1 <= len(values) <= MAX_STEPS_LISTED and all(math.isfinite(x) for x in values)
