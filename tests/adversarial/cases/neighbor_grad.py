"""Per-parameter loop that also reads the PREVIOUS parameter's gradient
(`group["params"][i - 1].grad`), e.g. a smoothing across layers: the loop's next iteration
reads a gradient the previous iteration may have used as scratch."""
import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


class NeighborSmoothedAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, mix=0.1):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, mix=mix))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params = group["params"]
            for i, p in enumerate(params):
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                prev = params[i - 1].grad if i > 0 else None
                if prev is not None and prev.shape == grad.shape:
                    grad = grad.mul(1 - group["mix"]).add_(prev, alpha=group["mix"])
                elif prev is not None and prev.numel() > 0:
                    grad = grad + group["mix"] * prev.mean()
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = state["v"].sqrt().add_(group["eps"])
                p.addcdiv_(state["m"], denom, value=-group["lr"])
