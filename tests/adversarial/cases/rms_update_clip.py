"""RMSprop with Adafactor-style update clipping: `update = grad / avg`, then
`update.div_((rms(update) / d).clamp_(min=1.0))`, a reduction over the update temporary."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class ClippedRMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.95, eps=1e-8, clip_threshold=1.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, clip_threshold=clip_threshold))

    @staticmethod
    def _rms(tensor):
        return tensor.pow(2).mean().sqrt()

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                grad = p.grad
                state = self.state[p]
                if "square_avg" not in state:
                    state["square_avg"] = torch.zeros_like(p)
                square_avg = state["square_avg"]
                square_avg.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                avg = square_avg.sqrt().add_(group["eps"])
                update = grad / avg
                update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                p.add_(update, alpha=-group["lr"])
