"""Adamax written with `getattr(p, "grad", None)`, `max(...)` of Python floats, and the
infinity norm via `torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=...)`."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # session 20: `unsqueeze_` in the step: `state["step"]` is no host
# scalar there (a 0-d entry may be reshaped), so nothing moves and the check finds it equal


class AdamaxGetattr(Optimizer):
    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                grad = getattr(p, "grad", None)
                if grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_inf"] = torch.zeros_like(p)
                state["step"] += 1
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
                exp_avg.lerp_(grad, 1 - beta1)
                norm_buf = torch.cat([exp_inf.mul_(beta2).unsqueeze(0),
                                      grad.abs().add_(group["eps"]).unsqueeze_(0)], 0)
                exp_inf.copy_(torch.amax(norm_buf, 0, keepdim=False))
                clr = group["lr"] / max(1 - beta1 ** state["step"], 1e-12)
                p.addcdiv_(exp_avg, exp_inf, value=-clr)
