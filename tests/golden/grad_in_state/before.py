import torch
from torch.optim import Optimizer


class StoresGrad(Optimizer):
    """Must not fire: the gradient itself is stored in optimizer state."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["last_grad"] = p.grad
                update = p.grad.sign() * group["lr"]
                p.sub_(update)
