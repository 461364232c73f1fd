"""A `**kwargs` debugging helper that stores whatever it is given on self
(`self._record(grad=grad, denom=denom)` -> `self.debug.update(kwargs)`) inside an RMSprop step."""
import torch
from torch.optim import Optimizer

# rewritten since a helper that takes **kwargs is an unknown call: what it is given escapes, so
# nothing it keeps is used as scratch (before, the symbolic validation refused the class)
EXPECT = "rewritten"


class RecordingRMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))
        self.debug = {}

    def _record(self, **kwargs):
        self.debug.update(kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "sq" not in state:
                    state["sq"] = torch.zeros_like(p)
                sq = state["sq"]
                sq.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                denom = sq.sqrt().add_(group["eps"])
                self._record(grad=grad, denom=denom)
                upd = grad / denom
                p.sub_(upd, alpha=group["lr"])
