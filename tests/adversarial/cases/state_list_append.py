"""`state["updates"].append(update)` where the update is a fresh temporary, and a running
sum `state["acc"]` that aliases the FIRST gradient (`state["acc"] = grad` on step 1)."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class AccumulatedSign(Optimizer):
    def __init__(self, params, lr=1e-2, keep=2):
        super().__init__(params, dict(lr=lr, keep=keep))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "acc" not in state:
                    state["acc"] = grad
                    state["updates"] = []
                else:
                    state["acc"].add_(grad)
                update = torch.sign(state["acc"]) * grad.abs().sqrt()
                state["updates"].append(update)
                if len(state["updates"]) > group["keep"]:
                    state["updates"].pop(0)
                p.sub_(update, alpha=group["lr"])
