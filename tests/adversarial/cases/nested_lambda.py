# ruff: noqa: B023  (closures capturing the loop variables are the construct under test)
"""A nested function and a lambda defined inside `step` that capture the gradient
(`apply = lambda t: t.addcmul_(grad, grad, ...)`, `def upd(): return grad / denom`)."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class ClosureRMS(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "sq" not in state:
                    state["sq"] = torch.zeros_like(p)
                accumulate = lambda t: t.mul_(group["alpha"]).addcmul_(  # noqa: E731
                    grad, grad, value=1 - group["alpha"])
                accumulate(state["sq"])
                denom = state["sq"].sqrt().add_(group["eps"])

                def upd():
                    return grad / denom

                u = upd()
                p.sub_(u, alpha=group["lr"])
                p.sub_(grad * 1e-3, alpha=group["lr"])
