import torch
from torch.optim import Optimizer


class SignedScale(Optimizer):
    def __init__(self, params, lr=0.1, maximize=False):
        super().__init__(params, dict(lr=lr, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if not group["maximize"] else -p.grad
                scaled = (grad * group["lr"]).clamp_(-1.0, 1.0)
                p.sub_(scaled)
