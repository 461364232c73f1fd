"""Keeps `self.prev_grads = [p.grad for p in ...]` (references, no clone) on self and uses the
difference to the previous step's gradients next step (a Barzilai-Borwein-like step size)."""
import torch
from torch.optim import Optimizer

# rewritten since the analysis evaluates a comprehension's later `for` clauses where the earlier
# targets are bound: `params` holds the params, so `self.prev_grads = [p.grad for p in params]`
# is seen to keep every gradient (before, the symbolic validation refused the class)
EXPECT = "rewritten"


class BBMomentum(Optimizer):
    def __init__(self, params, lr=1e-2, momentum=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))
        self.prev_grads = None

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        prev = self.prev_grads
        index = {id(q): j for j, q in enumerate(params)}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "buf" not in state:
                    state["buf"] = torch.zeros_like(p)
                    state["scale"] = torch.ones_like(p)
                if prev is not None:
                    j = index[id(p)]
                    if prev[j] is not None:
                        state["scale"].copy_((grad - prev[j]).abs().add_(group["eps"]).reciprocal_()
                                             .clamp_(max=10.0))
                step = grad * state["scale"]
                state["buf"].mul_(group["momentum"]).add_(step)
                p.add_(state["buf"], alpha=-group["lr"])
        self.prev_grads = [p.grad for p in params]
