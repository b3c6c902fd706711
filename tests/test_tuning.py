import platform

import pytest
import torch

from vqclip import tuning


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc() -> None:
    assert tuning.keep_freed_memory() is True
    x = torch.ones(64, 2**20)  # 256 MiB allocated and freed under the new settings
    assert float(x.sum()) == 64 * 2**20
    del x


def test_fast_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4
    assert tuning.fast_precision(torch.device("cuda")) == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # H100
    assert tuning.fast_precision(torch.device("cuda:0")) == "bf16"
    monkeypatch.setattr(tuning, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert tuning.fast_precision(torch.device("cpu")) == "fp32"
    monkeypatch.setattr(tuning, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    assert tuning.fast_precision(torch.device("cpu")) == "bf16"
