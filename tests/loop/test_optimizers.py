"""DiffGrad and AdamP, written from their papers: checked against Adam where they must agree."""

from __future__ import annotations

import pytest
import torch

from vqclip.loop.optimizers import AdamP, DiffGrad, make_optimizer


def _one_step(cls: type, param: torch.Tensor, grad: torch.Tensor, **kwargs: float) -> torch.Tensor:
    param = param.clone().requires_grad_(True)
    optimizer = cls([param], lr=0.1, **kwargs)
    param.grad = grad.clone()
    optimizer.step()
    return param.detach()


def test_diffgrad_is_adam_with_each_step_scaled_by_the_gradients_change() -> None:
    torch.manual_seed(0)
    param, grad, grad2 = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    adam = _one_step(torch.optim.Adam, param, grad)
    diff = _one_step(DiffGrad, param, grad)
    # First step: the previous gradient is zero, so the friction is sigmoid(|g|).
    assert torch.allclose(param - diff, (param - adam) * torch.sigmoid(grad.abs()), atol=1e-6)
    # Second step: the friction follows |g1 - g2|, elementwise.
    p = param.clone().requires_grad_(True)
    d = DiffGrad([p], lr=0.1)
    a = torch.optim.Adam([q := param.clone().requires_grad_(True)], lr=0.1)
    for g in (grad, grad2):
        p.grad, q.grad = g.clone(), g.clone()
        before_p, before_q = p.detach().clone(), q.detach().clone()
        d.step(), a.step()
    friction = torch.sigmoid((grad - grad2).abs())
    assert torch.allclose(before_p - p, (before_q - q) * friction, atol=1e-6)


def test_adamp_drops_the_radial_part_only_for_scale_invariant_tensors() -> None:
    torch.manual_seed(1)
    param = torch.randn(4, 64)
    tangent = torch.randn(4, 64)
    tangent -= param * (tangent * param).sum(1, keepdim=True) / param.pow(2).sum(1, keepdim=True)
    # A gradient orthogonal to every channel: the step keeps each channel's norm to first order.
    stepped = _one_step(AdamP, param, tangent)
    radial = ((stepped - param) * param).sum(1) / param.norm(dim=1)
    assert radial.abs().max() < 1e-5
    assert not torch.allclose(stepped, _one_step(torch.optim.Adam, param, tangent))
    # A gradient along the parameter is no sign of scale invariance: AdamP steps as Adam does.
    along = param * 0.3
    adam = _one_step(torch.optim.Adam, param, along)
    assert torch.allclose(_one_step(AdamP, param, along), adam, atol=1e-6)


@pytest.mark.parametrize("name", ["DiffGrad", "AdamP"])
def test_they_minimise_and_save_their_state(name: str) -> None:
    target = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    param = torch.zeros(8, 16, requires_grad=True)
    optimizer = make_optimizer(name, [param], 0.05)
    for _ in range(200):
        optimizer.zero_grad()
        loss = (param - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    assert loss < 0.05
    again = make_optimizer(name, [torch.zeros(8, 16, requires_grad=True)], 0.05)
    again.load_state_dict(optimizer.state_dict())  # what state.pt keeps for resuming
    assert again.state_dict()["state"][0]["step"] == 200
