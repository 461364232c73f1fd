"""Appends the raw gradient of the first param of each group to `self.debug_grads`
(a logging list on self, no clone) and also logs update norms as Python floats."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class DebugAdagrad(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-10):
        super().__init__(params, dict(lr=lr, eps=eps))
        self.debug_grads = []
        self.update_norms = []

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for j, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                grad = p.grad
                if j == 0:
                    self.debug_grads.append(grad)
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros_like(p)
                state["sum"].addcmul_(grad, grad, value=1)
                std = state["sum"].sqrt().add_(group["eps"])
                update = grad / std
                self.update_norms.append(float(update.norm()))
                p.sub_(update, alpha=group["lr"])
