"""Adan (Xie et al.) per parameter with the previous gradient copied into state at the end
(`state['pre_grad'].copy_(grad)`), gradient difference `diff = grad - pre_grad` temporary."""
import math

import torch
from torch.optim import Optimizer

EXPECT = "rewritten"


class AdanLoop(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.02,
                 no_prox=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2, beta3 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["exp_avg_diff"] = torch.zeros_like(p)
                    state["pre_grad"] = grad.clone()
                state["step"] += 1
                step = state["step"]
                bias_correction1 = 1.0 - beta1 ** step
                bias_correction2 = 1.0 - beta2 ** step
                bias_correction3 = 1.0 - beta3 ** step
                exp_avg, exp_avg_sq, exp_avg_diff = (state["exp_avg"], state["exp_avg_sq"],
                                                     state["exp_avg_diff"])
                diff = grad - state["pre_grad"]
                update = grad + beta2 * diff
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_diff.mul_(beta2).add_(diff, alpha=1 - beta2)
                exp_avg_sq.mul_(beta3).addcmul_(update, update, value=1 - beta3)
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction3)).add_(group["eps"])
                update = (exp_avg / bias_correction1 + beta2 * exp_avg_diff / bias_correction2
                          ).div_(denom)
                if group["no_prox"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update, alpha=-group["lr"])
                else:
                    p.add_(update, alpha=-group["lr"])
                    p.div_(1 + group["lr"] * group["weight_decay"])
                state["pre_grad"].copy_(grad)
        return loss
