"""Global gradient-norm clipping recomputed inside the per-parameter loop with `.item()`
(`clip = min(1.0, max_norm / total)`), a data-dependent Python scalar, then RMSprop."""
import math

import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


class ItemClipRMS(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8, max_norm=1.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, max_norm=max_norm))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                total = math.sqrt(sum(q.grad.pow(2).sum().item() for g in self.param_groups
                                      for q in g["params"] if q.grad is not None))
                clip = min(1.0, group["max_norm"] / (total + 1e-6))
                grad = p.grad.mul(clip)
                state = self.state[p]
                if "sq" not in state:
                    state["sq"] = torch.zeros_like(p)
                state["sq"].mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                avg = state["sq"].sqrt().add_(group["eps"])
                p.addcdiv_(grad, avg, value=-group["lr"])
