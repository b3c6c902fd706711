"""Optimisers by name: torch's, and the two that the classic scripts took from torch-optimizer.

``DiffGrad`` (Dubey et al., 2019, "diffGrad: An Optimization Method for Convolutional Neural
Networks") is Adam whose step shrinks where the gradient barely changes from the last step: each
element's step is scaled by ``sigmoid(|g_prev - g|)``, between 0.5 and 1.

``AdamP`` (Heo et al., 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights") is Adam that, where a tensor looks scale-invariant (its gradient is
nearly orthogonal to it, per channel or as a whole), removes the radial part of the step, so the
tensor's norm does not grow and slow its effective step down.

Both are written here from the papers, so that vqclip needs no extra package.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["DiffGrad", "AdamP", "OPTIMIZER_CLASSES", "make_optimizer"]


class _AdamBase(torch.optim.Optimizer):
    """Adam's moments, bias corrections and decoupled weight decay; a subclass reshapes each
    step's direction in :meth:`_shape` (here it is left as it is: plain Adam)."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        **extra: float,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, {**defaults, **extra})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One step for every parameter that has a gradient."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                direction = self._moments(param.grad, group, state)
                direction, decay = self._shape(param, param.grad, direction, group, state)
                if decay:
                    param.mul_(1 - group["lr"] * decay)
                param.add_(direction, alpha=-group["lr"])

    def _moments(self, grad: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
        """Adam's bias-corrected direction ``m / (sqrt(v) + eps)``, moments updated."""
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat = state["exp_avg"] / (1 - beta1 ** state["step"])
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
        return m_hat / (v_hat.sqrt() + group["eps"])

    def _shape(
        self, param: torch.Tensor, grad: torch.Tensor, direction: torch.Tensor, group: dict,
        state: dict,
    ) -> tuple[torch.Tensor, float]:  # fmt: skip
        """(the step's direction, its weight decay)."""
        return direction, group["weight_decay"]


class DiffGrad(_AdamBase):
    """Adam with each element's step scaled by ``sigmoid(|previous gradient - gradient|)``."""

    def _shape(
        self, param: torch.Tensor, grad: torch.Tensor, direction: torch.Tensor, group: dict,
        state: dict,
    ) -> tuple[torch.Tensor, float]:  # fmt: skip
        previous = state.get("previous_grad", torch.zeros_like(grad))
        state["previous_grad"] = grad.clone()
        friction = torch.sigmoid((previous - grad).abs())  # in [0.5, 1)
        return direction * friction, group["weight_decay"]


class AdamP(_AdamBase):
    """Adam that drops the radial part of the step of tensors that look scale-invariant."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float = 1e-3,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        **adam: Any,
    ) -> None:
        super().__init__(params, lr, delta=delta, wd_ratio=wd_ratio, **adam)

    def _shape(
        self, param: torch.Tensor, grad: torch.Tensor, direction: torch.Tensor, group: dict,
        state: dict,
    ) -> tuple[torch.Tensor, float]:  # fmt: skip
        if param.dim() > 1:
            projected = _project_if_scale_invariant(param, grad, direction, group["delta"])
            if projected is not None:
                return projected, group["weight_decay"] * group["wd_ratio"]
        return direction, group["weight_decay"]


def _project_if_scale_invariant(
    param: torch.Tensor, grad: torch.Tensor, direction: torch.Tensor, delta: float
) -> torch.Tensor | None:
    """``direction`` without its component along ``param`` (per channel, else as a whole) when
    the gradient is that nearly orthogonal to the parameter; None when it is not."""
    for rows in (param.shape[0], 1):  # per output channel, then the whole tensor
        p, g = param.reshape(rows, -1), grad.reshape(rows, -1)
        cosine = (p * g).sum(1).abs() / (p.norm(dim=1) * g.norm(dim=1)).clamp(min=1e-12)
        if cosine.max() < delta / math.sqrt(p.shape[1]):
            unit = p / p.norm(dim=1, keepdim=True).clamp(min=1e-12)
            d = direction.reshape(rows, -1)
            return (d - unit * (unit * d).sum(1, keepdim=True)).view_as(direction)
    return None


OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
    "Adagrad": torch.optim.Adagrad,
    "Adamax": torch.optim.Adamax,
    "NAdam": torch.optim.NAdam,
    "RAdam": torch.optim.RAdam,
    "RMSprop": torch.optim.RMSprop,
    "SGD": torch.optim.SGD,
    "DiffGrad": DiffGrad,
    "AdamP": AdamP,
}


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """An optimiser by name; raises ``ValueError`` listing the valid names."""
    if name not in OPTIMIZER_CLASSES:
        raise ValueError(
            f"optimizer: unknown {name!r}; valid options are {list(OPTIMIZER_CLASSES)}"
        )
    return OPTIMIZER_CLASSES[name](params, lr=lr)
