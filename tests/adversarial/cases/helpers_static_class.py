"""AdamW whose math lives in helpers reached three ways: a @staticmethod via `self.`, a
@classmethod via `type(self).`, and a @staticmethod via the class name. All three are followed;
the denominator is returned from its helper: it may not go where the caller's buffers are (the
gradient is not in that helper's scope), but it may take over the storage of the square root the
helper made and no longer needs, so one of the two temporaries goes."""
import math

import torch
from torch.optim import Optimizer

EXPECT = "rewritten"


class AdamWHelpers(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def _moments(grad, exp_avg, exp_avg_sq, beta1, beta2):
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

    @classmethod
    def _denom(cls, exp_avg_sq, bias_correction2, eps):
        return (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)

    @staticmethod
    def _apply(p, exp_avg, denom, step_size):
        p.addcdiv_(exp_avg, denom, value=-step_size)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                p.mul_(1 - group["lr"] * group["weight_decay"])
                self._moments(p.grad, state["exp_avg"], state["exp_avg_sq"], beta1, beta2)
                denom = type(self)._denom(state["exp_avg_sq"], 1 - beta2 ** state["step"],
                                          group["eps"])
                AdamWHelpers._apply(p, state["exp_avg"], denom,
                                    group["lr"] / (1 - beta1 ** state["step"]))
