"""Sizes the machine cannot hold are refused before any model is built."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_VQGAN
from vqclip.core.config import GenerationConfig
from vqclip.models.acquire import acquire
from vqclip.run import memory
from vqclip.run.build import check_inputs


def test_the_estimate_grows_with_pixels_and_images() -> None:
    small = memory.estimate_bytes(TINY_VQGAN, 64, 64, 1)
    assert memory.estimate_bytes(TINY_VQGAN, 128, 128, 1) > 4 * small  # attention: cells squared
    assert memory.estimate_bytes(TINY_VQGAN, 64, 64, 3) == 3 * small


def test_this_machine_reports_its_memory() -> None:
    assert memory.device_memory(torch.device("cpu")) > 2**30


@pytest.mark.parametrize("side", [16_384, 4096])  # 16384: the largest side a config takes
def test_a_size_beyond_the_machine_is_refused_with_the_figures(
    tiny_config: GenerationConfig, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    monkeypatch.setattr(memory, "device_memory", lambda device: 16 * 2**30)  # a 16 GiB machine
    config = tiny_config.replace(width=side, height=side)
    with pytest.raises(ValueError, match=rf"{side}x{side} x 1 image\(s\) needs about .* GiB, but this machine has 16.0 GiB"):  # fmt: skip
        check_inputs(config, acquire(config))
    fits = tiny_config.replace(width=256, height=256)
    check_inputs(fits, acquire(fits))  # no error
    with pytest.raises(ValueError, match=r"x 64 image\(s\)"):  # the batch counts
        check_inputs(fits.replace(batch_size=64), acquire(fits))
