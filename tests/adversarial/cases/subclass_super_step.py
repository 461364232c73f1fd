"""A user subclass of a same-module Adam that clips gradients by value in place, counts steps in
a name-mangled attribute (`self.__clips`) and delegates with `super().step(closure)`."""
import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined; it writes the gradient as the
# original does (the clamp), strip by strip, and no scratch into it
EXPECT = "rewritten"
CLASS = "ClippedAdam"


class AdamCore(Optimizer):
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
                    state["v"] = torch.zeros_like(p)
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = state["v"].sqrt().add_(group["eps"])
                p.addcdiv_(state["m"], denom, value=-group["lr"])


class ClippedAdam(AdamCore):
    def __init__(self, params, clip=0.5, **kwargs):
        super().__init__(params, **kwargs)
        self.clip = clip
        self.__clips = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.__clips += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    g = p.grad.clamp(-self.clip, self.clip)
                    p.grad.copy_(g.mul_(1.0 + 0.01 * self.__clips))
        return super().step(closure)
