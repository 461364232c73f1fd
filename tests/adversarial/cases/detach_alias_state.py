"""Stores `grad.detach()` in state as the previous gradient (detach shares storage with the
gradient), then an AdaBelief-like step with an `(grad - exp_avg)` residual temporary."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class DetachPrev(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["s"] = torch.zeros_like(p)
                    state["prev"] = torch.zeros_like(p)
                g = grad + 0.5 * (grad - state["prev"])
                state["prev"] = grad.detach()
                state["m"].mul_(beta1).add_(g, alpha=1 - beta1)
                res = g - state["m"]
                state["s"].mul_(beta2).addcmul_(res, res, value=1 - beta2)
                denom = state["s"].sqrt().add_(group["eps"])
                p.addcdiv_(state["m"], denom, value=-group["lr"])
