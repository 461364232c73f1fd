"""Adam whose epsilon is scaled by the tensor size inline (`.add_(eps * math.sqrt(p.numel()))`)
and whose step divides by the fan-in `grad.shape[-1]`: shape reads inside an element-wise run."""
import math

import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class FanInAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-4):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = v.sqrt().add_(group["eps"] * math.sqrt(p.numel()))
                update = (m / denom).div_(math.sqrt(max(1, grad.shape[-1] if grad.dim() else 1)))
                p.sub_(update, alpha=group["lr"])
