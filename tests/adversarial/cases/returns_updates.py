"""`step` returns a dict of per-parameter update tensors for logging (`return {"updates": ...}`),
so the update temporaries escape to the caller."""
import torch
from torch.optim import Optimizer

EXPECT = "refused"


class ReturningRMS(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        updates = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "sq" not in state:
                    state["sq"] = torch.zeros_like(p)
                state["sq"].mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                update = grad / state["sq"].sqrt().add_(group["eps"])
                p.sub_(update, alpha=group["lr"])
                updates.append(update)
        return {"updates": updates, "grads_seen": len(updates)}
