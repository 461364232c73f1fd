import torch
from torch.optim import Optimizer


def update_fn(p, grad, lr):
    update = grad * lr
    p.sub_(update)


def logging_update_fn(p, grad, lr):
    print(grad.norm())
    p.sub_(grad * lr)


class Rebinds(Optimizer):
    """Must not fire: a method other than __init__ rebinds `self.update_fn`, so step may call
    anything through it; it is not followed and the gradient passed to it escapes."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))
        self.update_fn = update_fn

    def enable_logging(self):
        self.update_fn = logging_update_fn

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.update_fn(p, p.grad, group["lr"])
