"""Overrides `zero_grad` to carry a fraction of the old gradient into the next step
(`p.grad.mul_(self.carry)` instead of zeroing): the optimizer itself reads p.grad after step()."""
import torch
from torch.optim import Optimizer

EXPECT = "refused"


class GradCarryRMS(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8, carry=0.5):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))
        self.carry = carry

    def zero_grad(self, set_to_none=False):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.mul_(self.carry)

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
                    state["m"] = torch.zeros_like(p)
                state["sq"].mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                state["m"].mul_(group["alpha"]).add_(grad, alpha=1 - group["alpha"])
                avg = state["sq"].sqrt().add_(group["eps"])
                p.addcdiv_(state["m"], avg, value=-group["lr"])
