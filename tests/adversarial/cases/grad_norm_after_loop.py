"""Logs the global gradient norm AFTER the update loop onto self (`self.last_grad_norm`), a
common monitoring pattern: the gradients are read again once every update is done."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class LoggedRMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))
        self.last_grad_norm = None

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "square_avg" not in state:
                    state["square_avg"] = torch.zeros_like(p)
                sq = state["square_avg"]
                sq.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                avg = sq.sqrt().add_(group["eps"])
                p.addcdiv_(grad, avg, value=-group["lr"])
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.last_grad_norm = torch.norm(torch.stack([torch.norm(g, 2.0) for g in grads]), 2.0)
