"""A helper with `*groups` that keeps the gradients on self, called with a spread
(`self.snapshot(*[group])`): the call is unknown, and as a method it is given `self` too, so it
can reach, keep and change every buffer; no gradient may hold scratch after it."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class SnapshotAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.last = []

    def snapshot(self, *groups):
        self.last = [p.grad for g in groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            self.snapshot(*[group])
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v = state["m"], state["v"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = v.sqrt().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"])
