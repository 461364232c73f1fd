import torch
from torch.optim import Optimizer


class DiffSGD(Optimizer):
    """Keeps the previous gradient: its buffer is dead between its last read and its overwrite."""

    def __init__(self, params, lr=0.1, beta=0.5):
        super().__init__(params, dict(lr=lr, beta=beta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["prev_grad"] = grad.clone()
                prev_grad = state["prev_grad"]
                diff = grad - prev_grad
                p.add_(diff, alpha=-group["lr"] * group["beta"])
                p.add_(grad, alpha=-group["lr"])
                prev_grad.copy_(grad)
