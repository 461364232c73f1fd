"""Preconditioned SGLD: RMSprop preconditioner plus Gaussian noise from a generator seeded in
the constructor (`torch.randn(p.shape, generator=self.gen)`), the generator kept on self."""
import torch
from torch.optim import Optimizer

EXPECT = "refused"


class PSGLD(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-5, temperature=1e-3, seed=0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, temperature=temperature))
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["V"] = torch.zeros_like(p)
                V = state["V"]
                V.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                G = V.sqrt().add_(group["eps"]).reciprocal_()
                noise = torch.randn(p.shape, generator=self.gen, dtype=p.dtype)
                noise.mul_(G.mul(2 * group["lr"] * group["temperature"]).sqrt_())
                p.addcmul_(G, grad, value=-group["lr"])
                p.add_(noise)
