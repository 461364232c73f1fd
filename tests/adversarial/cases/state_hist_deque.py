"""Keeps the last 3 raw gradients in a `deque(maxlen=3)` in state (appended without a clone,
via `state.setdefault`) and steps along their average: the deque holds gradient buffers."""
from collections import deque

import torch
from torch.optim import Optimizer

EXPECT = "refused"


class GradHistoryAvg(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                hist = state.setdefault("hist", deque(maxlen=3))
                hist.append(grad)
                avg = torch.stack(list(hist)).mean(0)
                denom = avg.abs().add_(group["eps"]).sqrt_()
                p.addcdiv_(avg, denom, value=-group["lr"])
