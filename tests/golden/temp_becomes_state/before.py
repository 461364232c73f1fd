import torch
from torch.optim import Optimizer


class RebindsState(Optimizer):
    """A temporary stored into state IS state from then on: never scratch for another one."""

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
                    state["buf"] = torch.zeros_like(p)
                buf = state["buf"].mul(0.9).add(p.grad)  # becomes the new state below
                state["buf"] = buf
                update = buf.sign()  # buf is not read again here, but it lives on in state
                p.sub_(update, alpha=group["lr"])
                p.sub_(p.grad, alpha=0.1 * group["lr"])
