"""Must not fire: a loop over a list of tensor lists visits the SAME parameters twice.

Unlike device groups (a partition of the parameters), the second iteration reads the gradients
the first one would have used as scratch, so `update` must not live in them.
"""

import torch
from torch.optim import Optimizer


class TwoSigns(Optimizer):
    def __init__(self, params, lr=0.01, beta=0.9):
        super().__init__(params, dict(lr=lr, beta=beta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    if len(state) == 0:
                        state["buf"] = torch.zeros_like(p)
                    params.append(p)
                    grads.append(p.grad)
                    bufs.append(state["buf"])
            torch._foreach_mul_(bufs, group["beta"])
            for xs in [bufs, grads]:
                update = torch._foreach_sign(xs)
                torch._foreach_add_(params, update, alpha=-group["lr"])
