"""RAdam with its rectification term kept in state as a Python float (`state["rho_t"]`): a host
scalar, so `(rho_t - 4.0)` is no temporary and `exp_avg_sq.sqrt()` lives in the gradient."""

import math

import torch
from torch.optim import Optimizer

EXPECT = "rewritten"
CTOR = {"lr": 1e-2}


class RAdamRho(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            rho_inf = 2 / (1 - beta2) - 1
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["rho_t"] = 0.0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["rho_t"] = rho_inf - 2 * step * beta2 ** step / (1 - beta2 ** step)
                rho_t = state["rho_t"]
                bc1 = 1 - beta1 ** step
                if rho_t > 5.0:
                    rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                    denom = exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)
                    denom = denom + group["eps"]
                    p.addcdiv_(exp_avg, denom, value=-group["lr"] * rect / bc1)
                else:
                    p.add_(exp_avg, alpha=-group["lr"] / bc1)
        return None
