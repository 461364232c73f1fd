import torch
from torch.optim import Optimizer


class LateClosure(Optimizer):
    """Must not fire: the nested function reads the gradient through `g`, a variable of step
    bound after the `def` and read when the function runs (after `update` is computed)."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.ones_like(p)
                v = state["v"]

                def apply_grad(param):
                    param.add_(g, alpha=-group["lr"])  # noqa: B023

                g = p.grad
                update = v.sqrt()
                p.sub_(update, alpha=group["lr"])
                apply_grad(p)
