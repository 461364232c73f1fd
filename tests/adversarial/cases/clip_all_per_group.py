"""`torch.nn.utils.clip_grad_norm_` over ALL params called at the start of EACH group's loop
(a common slip): group 2's clipping re-reads group 1's gradients; non-finite norms skip."""
import math

import torch
from torch.optim import Optimizer

# rewritten since the analysis evaluates a comprehension's later `for` clauses where the earlier
# targets are bound: `all_params` holds the params, so the clipping is seen to read every group's
# gradients (before, the symbolic validation refused the class)
EXPECT = "rewritten"


class ClipEachGroupAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, max_norm=0.5):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, max_norm=max_norm))
        self.skipped = 0

    @torch.no_grad()
    def step(self, closure=None):
        all_params = [p for g in self.param_groups for p in g["params"]]
        for group in self.param_groups:
            total = torch.nn.utils.clip_grad_norm_(all_params, group["max_norm"])
            if not math.isfinite(total.item()):
                self.skipped += 1
                continue
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = state["v"].sqrt().add_(group["eps"])
                p.addcdiv_(state["m"], denom, value=-group["lr"])
