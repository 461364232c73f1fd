"""Must not fire: `cast` here is not `typing.cast`, so the op catalog does not describe it; the
gradient lists passed to it escape and never hold scratch."""

import torch
from mylib import cast  # noqa: F401  (never imported: nothing is emitted)
from torch.optim import Optimizer


class SignMomentum(Optimizer):
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
            grads = cast(list, grads)
            torch._foreach_mul_(bufs, group["beta"])
            torch._foreach_add_(bufs, grads)
            update = torch._foreach_sign(bufs)
            # `cast` may do anything per call: the sign list cannot be strip-mined either
            torch._foreach_add_(params, cast(list, update), alpha=-group["lr"])
