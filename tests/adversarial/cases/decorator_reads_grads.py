"""A custom decorator on `step` that records gradient statistics AFTER the wrapped step runs
(`self.grad_stats.append(...)`): the decorator is part of the optimizer and reads p.grad."""
import functools

import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


def track_grad_stats(step_fn):
    @functools.wraps(step_fn)
    def wrapper(self, *args, **kwargs):
        out = step_fn(self, *args, **kwargs)
        sq = [p.grad.pow(2).sum() for g in self.param_groups for p in g["params"]
              if p.grad is not None]
        self.grad_stats.append(torch.stack(sq).sum().sqrt() if sq else None)
        return out
    return wrapper


class TrackedAdagrad(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-10):
        super().__init__(params, dict(lr=lr, eps=eps))
        self.grad_stats = []

    @track_grad_stats
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros_like(p)
                state["sum"].addcmul_(p.grad, p.grad, value=1)
                std = state["sum"].sqrt().add_(group["eps"])
                p.addcdiv_(p.grad, std, value=-group["lr"])
