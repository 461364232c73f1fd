import torch
from torch.optim import Optimizer


class AliasLater(Optimizer):
    """Must not fire: the gradient is read later through a name bound after the temporary."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                update = p.data.sign() * group["lr"]  # the gradient is not dead here:
                flat = grad.flatten()  # a new name for its buffer is bound below
                p.sub_(update)
                p.sub_(flat.view_as(p), alpha=group["lr"])
