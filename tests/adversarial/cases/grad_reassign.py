"""Replaces the gradient object (`p.grad = p.grad.clamp(...)`, `p.grad = p.grad + wd * p`)
inside the step and later reads `p.grad` again for the update and a `state["last"]` copy."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class ReassignSGD(Optimizer):
    def __init__(self, params, lr=0.05, momentum=0.9, clip=0.7, weight_decay=1e-3):
        super().__init__(params, dict(lr=lr, momentum=momentum, clip=clip,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                raw = p.grad
                p.grad = p.grad.clamp(-group["clip"], group["clip"])
                if group["weight_decay"]:
                    p.grad = p.grad + group["weight_decay"] * p
                state = self.state[p]
                if "buf" not in state:
                    state["buf"] = torch.zeros_like(p)
                    state["last"] = torch.zeros_like(p)
                state["buf"].mul_(group["momentum"]).add_(p.grad)
                step = state["buf"] * group["lr"] + (raw - p.grad) * (0.1 * group["lr"])
                p.sub_(step)
                state["last"].copy_(p.grad)
