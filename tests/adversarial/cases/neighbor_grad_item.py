"""Reads the previous parameter's gradient (`params[i - 1].grad`) for a cross-layer momentum
blend, with a data-dependent skip (`if not torch.isfinite(grad).all().item(): continue`)."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class CrossLayerRMS(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8, mix=0.25):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, mix=mix))
        self.skipped = 0

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = group["params"]
            for i, p in enumerate(params):
                if p.grad is None:
                    continue
                grad = p.grad
                if not torch.isfinite(grad).all().item():
                    self.skipped += 1
                    continue
                state = self.state[p]
                if "sq" not in state:
                    state["sq"] = torch.zeros_like(p)
                sq = state["sq"]
                sq.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                avg = sq.sqrt().add_(group["eps"])
                p.addcdiv_(grad, avg, value=-group["lr"])
                nxt = params[i + 1].grad if i + 1 < len(params) else None
                if nxt is not None and nxt.numel():
                    p.add_(nxt.mean() * group["mix"] * group["lr"])
                prev = params[i - 1].grad if i > 0 else None
                if prev is not None and prev.numel():
                    p.sub_(prev.abs().mean() * group["mix"] * group["lr"])
