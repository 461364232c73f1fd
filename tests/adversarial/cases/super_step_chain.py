"""Subclass of torch.optim.SGD that centralizes and rescales gradients in place, keeps a
smoothed copy in state, then delegates with `return super().step(closure)`."""
import torch
from torch.optim import Optimizer  # noqa: F401  (the case convention; the base is SGD)

# found since locate resolves bases through imports (torch.optim.SGD): its temporaries are
# strip-mined, the gradient (which super().step reads) is only written as the original writes it
EXPECT = "rewritten"
CTOR = {"lr": 0.05, "momentum": 0.9}


class CentralizedSGD(torch.optim.SGD):
    def __init__(self, params, lr=0.05, momentum=0.0, smoothing=0.5, **kwargs):
        super().__init__(params, lr=lr, momentum=momentum, **kwargs)
        self.smoothing = smoothing

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.dim() > 1:
                    g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))
                state = self.state[p]
                if "smooth" not in state:
                    state["smooth"] = g.clone()
                sm = state["smooth"]
                sm.mul_(self.smoothing).add_(g, alpha=1 - self.smoothing)
                scaled = sm / (sm.abs() + 1e-3)
                g.copy_(scaled)
        return super().step(closure)
