"""Colour coherence: a frame's start gets frame 0's colours, channel by channel."""

from __future__ import annotations

import pytest
import torch

from vqclip.run.coherence import ColorKeeper, match_colors


def _sorted_channels(image: torch.Tensor) -> torch.Tensor:
    return image.flatten(2).sort(-1).values


def test_in_rgb_the_image_takes_the_references_values_in_its_own_order() -> None:
    """Distinct values, the same pixel count: each channel's k-th smallest value becomes the
    reference's k-th smallest, exactly, and the pixels keep their order."""
    g = torch.Generator().manual_seed(0)
    image, reference = torch.rand(2, 3, 12, 10, generator=g), torch.rand(2, 3, 12, 10, generator=g) * 0.4  # fmt: skip
    matched = match_colors(image, reference, "rgb")
    assert torch.equal(_sorted_channels(matched), _sorted_channels(reference))
    ranks = image.flatten(2).argsort(-1)
    assert torch.equal(matched.flatten(2).argsort(-1), ranks)


@pytest.mark.parametrize("space", ["rgb", "hsv", "lab"])
def test_a_flat_colour_stays_flat_and_takes_on_the_references_cast(space: str) -> None:
    """A red disc on blue, matched to a green-on-white picture: still two colours, each one
    uniform, in every space; in rgb and lab near the reference's mean colour (in hsv the two
    colours share one brightness, which goes to the reference's largest: channels are matched
    one by one, as Deforum's are)."""
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = ((x - 16) ** 2 + (y - 16) ** 2 < 64).float()
    image = torch.stack([disc * 0.86, 0.12 + 0 * disc, (1 - disc) * 0.86]).unsqueeze(0)
    reference = torch.stack([0.96 - disc * 0.84, 0.96 - disc * 0.3, 0.96 - disc * 0.76]).unsqueeze(0)  # fmt: skip
    matched = match_colors(image, reference, space)
    assert len({tuple(p.tolist()) for p in matched[0].flatten(1).T.round(decimals=4)}) == 2
    if space == "hsv":
        return
    far_before = (image.mean((2, 3)) - reference.mean((2, 3))).abs().max()
    assert (matched.mean((2, 3)) - reference.mean((2, 3))).abs().max() < 0.25 * far_before


def test_the_keeper_reads_frame_0_once() -> None:
    reads = []
    reference = torch.full((1, 3, 4, 4), 0.5)
    keep = ColorKeeper("rgb", lambda: reads.append(1) or reference)
    for _ in range(3):
        assert torch.equal(keep(torch.rand(1, 3, 4, 4)), reference)
    assert reads == [1]
