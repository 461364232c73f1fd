"""Adan-style gradient difference where the previous gradient is stored in state WITHOUT a
clone (`state["prev_grad"] = grad`): the stored tensor is the gradient buffer itself."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class PrevGradAlias(Optimizer):
    def __init__(self, params, lr=1e-2, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "prev_grad" not in state:
                    state["prev_grad"] = torch.zeros_like(p)
                    state["m"] = torch.zeros_like(p)
                diff = grad - state["prev_grad"]
                state["m"].mul_(group["beta"]).add_(diff, alpha=1 - group["beta"])
                denom = state["m"].abs().add_(group["eps"])
                p.addcdiv_(grad, denom, value=-group["lr"])
                state["prev_grad"] = grad
