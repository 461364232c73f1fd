"""Module-level globals mutated by the step: a global step counter (`global _STEPS`) used in
the bias correction and a module-level list `_UPDATE_LOG` that receives each update tensor."""
import torch
from torch.optim import Optimizer

EXPECT = "refused"

_STEPS = 0
_UPDATE_LOG = []


class GlobalCountAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        global _STEPS
        _STEPS += 1
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
                denom = (state["v"] / (1 - beta2 ** _STEPS)).sqrt_().add_(group["eps"])
                update = state["m"] / denom
                _UPDATE_LOG.append(update)
                if len(_UPDATE_LOG) > 40:
                    del _UPDATE_LOG[0]
                p.sub_(update, alpha=group["lr"] / (1 - beta1 ** _STEPS))
