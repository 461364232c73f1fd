import torch
from torch.optim import Optimizer


class ViewLater(Optimizer):
    """Must not fire: a view of the gradient is read after the would-be reuse point."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                flat = p.grad.view(p.grad.shape)  # any layout: the checker's params are odd
                update = p.data * group["lr"]
                p.sub_(update)
                p.sub_(flat, alpha=group["lr"])
