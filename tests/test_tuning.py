import platform

import pytest
import torch

from tests.conftest import tiny_vqgan_spec
from vqclip import tuning
from vqclip.latents import decode_latent
from vqclip.models import build_vqgan, set_fused_swish


def test_fused_swish_is_the_same_function_as_taming_s() -> None:
    torch.manual_seed(0)
    vqgan = build_vqgan(tiny_vqgan_spec()).eval()
    latent = torch.randn(1, 16, 16, 16, requires_grad=True)
    outputs, grads = [], []
    try:
        for fused in (False, True):
            set_fused_swish(fused)
            latent.grad = None
            image = decode_latent(vqgan, latent)
            image.square().sum().backward()
            outputs.append(image.detach())
            grads.append(latent.grad.clone())
    finally:
        set_fused_swish(True)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4)
    assert grads[0].abs().sum() > 0
    import taming.modules.diffusionmodules.model as taming_blocks

    assert taming_blocks.nonlinearity is torch.nn.functional.silu  # on again after the test


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
