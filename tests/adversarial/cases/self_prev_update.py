"""Keeps `self.prev_update[p] = update` (the temporary itself, no clone) in a dict on self, not
in state, and blends it into the next update (heavy-ball on the adaptive update)."""
import torch
from torch.optim import Optimizer

EXPECT = "refused"


class HeavyBallAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, hb=0.5):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, hb=hb))
        self.prev_update = {}

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
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = state["m"] / state["v"].sqrt().add_(group["eps"])
                if p in self.prev_update:
                    update.add_(self.prev_update[p], alpha=group["hb"])
                p.sub_(update, alpha=group["lr"])
                self.prev_update[p] = update
