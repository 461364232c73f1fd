"""Adan: Adaptive Nesterov Momentum (Xie et al., 2022), after timm's implementation.

Reference original for gsr-rewrite: the per-parameter for-loop lives directly in ``step``; the
multi-tensor path is the module-level function ``_adan_foreach``.
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


def _default_to_foreach(params: list[torch.Tensor]) -> bool:
    # Same rule as torch.optim: foreach kernels only pay off for floating tensors on CUDA.
    return all(p.is_cuda and torch.is_floating_point(p) for p in params)


class Adan(Optimizer):
    """Adan with decoupled (proximal or plain) weight decay.

    Per step, with d = g - g_prev:  m <- lerp(m, g, 1-b1), v <- lerp(v, d, 1-b2),
    n <- b3 n + (1-b3) (g + b2 d)^2,  p <- p - lr (m/bc1 + b2 v/bc2) / (sqrt(n/bc3) + eps).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        no_prox: bool = False,
        foreach: bool | None = None,
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if len(betas) != 3:
            raise ValueError(f"Adan needs three betas, got {betas}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            no_prox=no_prox,
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
            beta1, beta2, beta3 = group["betas"]
            lr = group["lr"]
            weight_decay = group["weight_decay"]
            eps = group["eps"]
            no_prox = group["no_prox"]

            params_with_grad = [p for p in group["params"] if p.grad is not None]
            if not params_with_grad:
                continue

            for p in params_with_grad:
                if p.grad.is_sparse:
                    raise RuntimeError("Adan does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_diff"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    # The first gradient difference is zero.
                    state["prev_grad"] = p.grad.clone(memory_format=torch.preserve_format)
                state["step"] += 1

            foreach = group["foreach"]
            if foreach is None:
                foreach = _default_to_foreach(params_with_grad)
            if foreach:
                _adan_foreach(
                    params_with_grad,
                    [p.grad for p in params_with_grad],
                    [self.state[p]["exp_avg"] for p in params_with_grad],
                    [self.state[p]["exp_avg_diff"] for p in params_with_grad],
                    [self.state[p]["exp_avg_sq"] for p in params_with_grad],
                    [self.state[p]["prev_grad"] for p in params_with_grad],
                    [self.state[p]["step"] for p in params_with_grad],
                    beta1=beta1,
                    beta2=beta2,
                    beta3=beta3,
                    lr=lr,
                    weight_decay=weight_decay,
                    eps=eps,
                    no_prox=no_prox,
                )
                continue

            for p in params_with_grad:
                grad = p.grad
                state = self.state[p]
                exp_avg = state["exp_avg"]
                exp_avg_diff = state["exp_avg_diff"]
                exp_avg_sq = state["exp_avg_sq"]
                prev_grad = state["prev_grad"]
                step = state["step"]

                diff = grad - prev_grad
                exp_avg.lerp_(grad, 1 - beta1)  # m_t
                exp_avg_diff.lerp_(diff, 1 - beta2)  # v_t
                update = grad.add(diff, alpha=beta2)
                exp_avg_sq.mul_(beta3).addcmul_(update, update, value=1 - beta3)  # n_t

                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                bias_correction3 = 1 - beta3**step

                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction3)).add_(eps)
                step_size = lr / bias_correction1
                step_size_diff = lr * beta2 / bias_correction2

                if no_prox:
                    if weight_decay != 0:
                        p.mul_(1 - lr * weight_decay)
                    p.addcdiv_(exp_avg, denom, value=-step_size)
                    p.addcdiv_(exp_avg_diff, denom, value=-step_size_diff)
                else:
                    p.addcdiv_(exp_avg, denom, value=-step_size)
                    p.addcdiv_(exp_avg_diff, denom, value=-step_size_diff)
                    if weight_decay != 0:
                        p.div_(1 + lr * weight_decay)

                prev_grad.copy_(grad)

        return loss


def _adan_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_diffs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    prev_grads: list[torch.Tensor],
    steps: list[int],
    *,
    beta1: float,
    beta2: float,
    beta3: float,
    lr: float,
    weight_decay: float,
    eps: float,
    no_prox: bool,
) -> None:
    diffs = torch._foreach_sub(grads, prev_grads)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m_t
    torch._foreach_lerp_(exp_avg_diffs, diffs, 1 - beta2)  # v_t
    updates = torch._foreach_add(grads, diffs, alpha=beta2)
    torch._foreach_mul_(exp_avg_sqs, beta3)
    torch._foreach_addcmul_(exp_avg_sqs, updates, updates, 1 - beta3)  # n_t

    bias_correction1 = [1 - beta1**step for step in steps]
    bias_correction2 = [1 - beta2**step for step in steps]
    bias_correction3_sqrt = [math.sqrt(1 - beta3**step) for step in steps]

    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction3_sqrt)
    torch._foreach_add_(denom, eps)

    step_size = [-lr / bc for bc in bias_correction1]
    step_size_diff = [-lr * beta2 / bc for bc in bias_correction2]

    if no_prox:
        if weight_decay != 0:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)
        torch._foreach_addcdiv_(params, exp_avg_diffs, denom, step_size_diff)
    else:
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)
        torch._foreach_addcdiv_(params, exp_avg_diffs, denom, step_size_diff)
        if weight_decay != 0:
            torch._foreach_div_(params, 1 + lr * weight_decay)

    torch._foreach_copy_(prev_grads, grads)
