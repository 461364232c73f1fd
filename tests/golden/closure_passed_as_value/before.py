import torch
from torch.optim import Optimizer


class ClosureAsValue(Optimizer):
    """Must not fire: the nested function that reads the gradient is handed to `map`, so it may
    run at any time; it is not followed and what it captures escapes."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                update = g * group["lr"]

                def apply_grad(param):
                    param.add_(g, alpha=-group["lr"])  # noqa: B023

                p.sub_(update)
                list(map(apply_grad, [p]))
