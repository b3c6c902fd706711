"""Losses: the spherical distance's values, prompt weights and stops, the init and smoothness pulls."""

import math

import pytest
import torch

from vqclip.loop.losses import (
    Targets,
    init_loss,
    prompt_losses,
    smoothness_loss,
    spherical_dist_loss,
)


def _targets(embeds: torch.Tensor, owner: list[int], weights: list[float], stops=None) -> Targets:
    count = len(weights)
    return Targets(
        embeds=torch.nn.functional.normalize(embeds, dim=-1),
        owner=torch.tensor(owner),
        weights=torch.tensor(weights),
        stops=torch.tensor(stops or [-math.inf] * count),
        names=tuple(f"p{i}" for i in range(count)),
    )


def test_spherical_distance_is_twice_the_squared_half_angle() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])
    # angle theta between them: 2 * (theta / 2) ** 2 = theta ** 2 / 2, whatever the lengths
    expected = torch.tensor([0.0, (math.pi / 2) ** 2 / 2, math.pi**2 / 2, (math.pi / 4) ** 2 / 2])
    torch.testing.assert_close(spherical_dist_loss(x, y), expected)


def test_a_prompts_loss_is_its_mean_distance_times_its_weight() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (N=2, D) two cutouts
    targets = _targets(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), [0, 1], [2.0, 0.5])
    each = (math.pi / 2) ** 2 / 2 / 2  # one cutout on the target, one at right angles
    torch.testing.assert_close(prompt_losses(image, targets), torch.tensor([2 * each, 0.5 * each]))


def test_a_prompt_with_several_rows_averages_them() -> None:
    # An image prompt owns one row per cutout: its loss is the mean over its rows, so that
    # it weighs as one prompt whatever cutn is.
    image = torch.tensor([[1.0, 0.0]])
    rows = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    targets = _targets(rows, [0, 0, 1], [1.0, 1.0])
    torch.testing.assert_close(
        prompt_losses(image, targets), torch.tensor([math.pi**2 / 2 / 2, 0.0])
    )


def test_a_negative_weight_pushes_away() -> None:
    image = torch.tensor([[1.0, 0.2]], requires_grad=True)
    targets = _targets(torch.tensor([[1.0, 0.0]]), [0], [-1.0])
    loss = prompt_losses(image, targets).sum()
    assert loss < 0  # minimising it means growing the distance
    loss.backward()
    # moving the image toward the target (smaller second component) would raise the loss
    assert image.grad[0, 1] < 0


@pytest.mark.parametrize("stop, pulls", [(-math.inf, True), (0.5, False), (0.01, True)])
def test_a_stop_cuts_the_pull_once_the_distance_is_below_it(stop: float, pulls: bool) -> None:
    image = torch.tensor([[1.0, 0.3]], requires_grad=True)  # distance about 0.04
    targets = _targets(torch.tensor([[1.0, 0.0]]), [0], [1.0], [stop])
    loss = prompt_losses(image, targets)
    assert 0.03 < float(loss.detach()) < 0.05  # the value is reported either way
    loss.sum().backward()
    assert bool(image.grad.abs().sum() > 0) is pulls


def test_init_loss_is_half_weighted_mse_toward_the_start() -> None:
    start = torch.zeros(1, 4, 2, 2)
    latent = torch.full((1, 4, 2, 2), 2.0)
    assert float(init_loss(latent, start, 3.0)) == pytest.approx(3.0 / 2 * 4.0)
    assert float(init_loss(start, start, 3.0)) == 0.0


def test_smoothness_is_zero_on_a_flat_image_and_grows_with_speckle() -> None:
    flat = torch.full((2, 3, 8, 8), 0.4)
    stripes = flat.clone()
    stripes[..., ::2] = 0.6
    assert float(smoothness_loss(flat, 1.0)) == 0.0
    assert float(smoothness_loss(stripes, 1.0)) > 0.0
    # per image, not per batch: two images pull as hard each as one does alone
    one = smoothness_loss(stripes[:1], 1.0)
    torch.testing.assert_close(smoothness_loss(stripes, 1.0), 2 * one)


def test_a_region_prompt_is_scored_on_its_regions_cutouts_only() -> None:
    """Cutouts come region by region (the whole image's first); a prompt named for region 1
    is measured on region 1's rows alone, an unnamed one on the whole image's."""
    from vqclip.loop.losses import Targets

    torch.manual_seed(0)
    embeds = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)  # two prompts' targets
    whole, region = torch.randn(4, 8), torch.randn(4, 8)
    targets = Targets(embeds, torch.tensor([0, 1]), torch.ones(2), torch.full((2,), -math.inf), ("a", "b"),  # fmt: skip
                      region=torch.tensor([0, 1]), groups=2)  # fmt: skip
    losses = prompt_losses(torch.cat([whole, region]), targets)
    plain = Targets(embeds, torch.tensor([0, 1]), torch.ones(2), torch.full((2,), -math.inf), ("a", "b"))  # fmt: skip
    assert torch.allclose(losses[0], prompt_losses(whole, plain)[0])
    assert torch.allclose(losses[1], prompt_losses(region, plain)[1])
    assert not torch.allclose(losses[1], prompt_losses(whole, plain)[1])


def test_blended_targets_interpolate_the_two_prompt_lists_losses() -> None:
    """An animation's prompt blend: both lists scored at once, weights scaled by 1 - s and s,
    gives (1 - s) of the first list's loss plus s of the second's."""
    from vqclip.loop.losses import Targets, blend_targets, prompt_losses

    g = torch.Generator().manual_seed(0)

    def targets(count: int, names: tuple[str, ...]) -> Targets:
        embeds = torch.nn.functional.normalize(torch.randn(count, 8, generator=g), dim=-1)
        owner = torch.arange(count) % len(names)
        weights = torch.rand(len(names), generator=g) + 0.5
        return Targets(embeds, owner, weights, torch.full((len(names),), -1e9), names)

    first, second = targets(3, ("a red circle", "blue")), targets(2, ("a green square",))
    cuts = torch.randn(6, 8, generator=g)
    for share in (0.0, 0.25, 1.0):
        blended = prompt_losses(cuts, blend_targets(first, second, share)).sum()
        expected = (1 - share) * prompt_losses(cuts, first).sum() + share * prompt_losses(cuts, second).sum()  # fmt: skip
        assert torch.allclose(blended, expected, atol=1e-6), share


def test_prompt_blend_spreads_a_keys_change_over_frames() -> None:
    from vqclip.core.config import GenerationConfig

    config = GenerationConfig(prompts="0: a red circle | 4: a green square", animation_mode="2D", max_frames=10, prompt_blend=3)  # fmt: skip
    assert [config.prompt_at(frame) for frame in (3, 4, 5, 6, 7)] == [
        (0, None), (1, (0, 0.25)), (1, (0, 0.5)), (1, (0, 0.75)), (1, None),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="prompt_blend: 2 frames blend prompts keyed by frame"):
        GenerationConfig(prompts="a red circle", animation_mode="2D", max_frames=4, prompt_blend=2)
