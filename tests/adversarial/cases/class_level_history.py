"""A class-level mutable attribute (`grad_history = []` in the class body, shared by every
instance) that step() appends raw gradients to, then uses the mean of the last two."""
import torch
from torch.optim import Optimizer

# the gradients escape into the history, so no temporary may live in them; `denom` is strip-mined
# instead (its run only reads the gradient, and reads `state["sq"]` once before it)
EXPECT = "rewritten"


class SharedHistorySGD(Optimizer):
    grad_history = []

    def __init__(self, params, lr=0.05, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                self.grad_history.append(grad)
                if len(self.grad_history) > 50:
                    self.grad_history.pop(0)
                state = self.state[p]
                if "sq" not in state:
                    state["sq"] = torch.zeros_like(p)
                state["sq"].mul_(0.9).addcmul_(grad, grad, value=0.1)
                denom = state["sq"].sqrt().add_(group["eps"])
                p.addcdiv_(grad, denom, value=-group["lr"])
