"""Lion: EvoLved Sign Momentum (Chen et al., 2023), after the timm / lucidrains implementations.

Reference original for gsr-rewrite: ``step`` calls the module-level helpers ``_lion_single``
(a ``zip`` over params, grads and momenta) or ``_lion_multi`` (torch._foreach_* ops).
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


def _default_to_foreach(params: list[torch.Tensor]) -> bool:
    # Same rule as torch.optim: foreach kernels only pay off for floating tensors on CUDA.
    return all(p.is_cuda and torch.is_floating_point(p) for p in params)


class Lion(Optimizer):
    """Lion: c = lerp(m, g, 1-b1); p <- p (1 - lr wd) - lr sign(c); m <- lerp(m, g, 1-b2)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform a single optimization step.

        ``closure`` (optional) re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params_with_grad: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            exp_avgs: list[torch.Tensor] = []
            beta1, beta2 = group["betas"]

            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lion does not support sparse gradients")
                params_with_grad.append(p)
                grads.append(p.grad)

                state = self.state[p]
                # Lazy state initialization
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avgs.append(state["exp_avg"])

            if not params_with_grad:
                continue

            foreach = group["foreach"]
            if foreach is None:
                foreach = _default_to_foreach(params_with_grad)
            if foreach:
                _lion_multi(
                    params_with_grad,
                    grads,
                    exp_avgs,
                    beta1=beta1,
                    beta2=beta2,
                    lr=group["lr"],
                    weight_decay=group["weight_decay"],
                    maximize=group["maximize"],
                )
            else:
                _lion_single(
                    params_with_grad,
                    grads,
                    exp_avgs,
                    beta1=beta1,
                    beta2=beta2,
                    lr=group["lr"],
                    weight_decay=group["weight_decay"],
                    maximize=group["maximize"],
                )

        return loss


def _lion_single(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for param, grad, exp_avg in zip(params, grads, exp_avgs, strict=True):
        if maximize:
            grad = -grad

        # Interpolate the update from the momentum before it moves.
        update = exp_avg.lerp(grad, 1 - beta1)

        # Perform stepweight decay
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)

        param.add_(torch.sign(update), alpha=-lr)

        # Decay the momentum running average coefficient
        exp_avg.lerp_(grad, 1 - beta2)


def _lion_multi(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    if maximize:
        grads = torch._foreach_neg(grads)  # type: ignore[assignment]

    # Interpolate the update from the momentum before it moves.
    updates = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)

    # Perform stepweight decay
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)

    torch._foreach_sign_(updates)
    torch._foreach_add_(params, updates, alpha=-lr)

    # Decay the momentum running average coefficient
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)
