"""`contextlib.suppress(ZeroDivisionError)` around a host-side schedule computation, and an
RMSprop step whose temporary is computed inside a `with` block."""
import contextlib

import torch
from torch.optim import Optimizer

# the temporary's run sits in `with contextlib.suppress(RuntimeError)`: strip-mined, an exception
# in a later strip would be swallowed after earlier strips were written (region_checks refuses)
EXPECT = "refused"


class SuppressRMS(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8, warmup=0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, warmup=warmup))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["sq"] = torch.zeros_like(p)
                state["step"] += 1
                scale = 1.0
                with contextlib.suppress(ZeroDivisionError):
                    scale = min(1.0, state["step"] / group["warmup"])
                with contextlib.suppress(RuntimeError):
                    state["sq"].mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                    avg = state["sq"].sqrt().add_(group["eps"])
                    p.addcdiv_(grad, avg, value=-group["lr"] * scale)
