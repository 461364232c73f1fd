"""A `try/except` around the adaptive update with a `raise` inside when the update ratio
explodes; the handler falls back to a sign-SGD step that reads the gradient again."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class UnstableUpdate(Exception):
    pass


class GuardedAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.5, 0.6), eps=1e-8, max_ratio=1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, max_ratio=max_ratio))
        self.fallbacks = 0

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
                    state["v"] = torch.zeros_like(p)
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                try:
                    denom = state["v"].sqrt().add_(group["eps"])
                    update = state["m"] / denom
                    if update.numel() and update.abs().max() > group["max_ratio"]:
                        raise UnstableUpdate(float(update.abs().max()))
                    p.sub_(update, alpha=group["lr"])
                except UnstableUpdate:
                    self.fallbacks += 1
                    p.add_(grad.sign(), alpha=-group["lr"] * 0.1)
