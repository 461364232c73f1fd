"""Noisy Adam drawing from the GLOBAL RNG inside the element-wise update
(`grad + torch.randn_like(grad) * sigma`), the style of gradient-noise papers."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class NoisyAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, sigma=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, sigma=sigma))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                g = p.grad + torch.randn_like(p.grad) * group["sigma"]
                state["m"].mul_(beta1).add_(g, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = state["v"].sqrt().add_(group["eps"])
                p.addcdiv_(state["m"], denom, value=-group["lr"])
