"""RMSprop with annealed Gaussian gradient noise (Neelakantan et al. 2015) drawn from the global
RNG next to the denominator (`torch.randn_like(avg)`), in one element-wise run."""
import torch
from torch.optim import Optimizer

EXPECT = "refused"


class NoisyRMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-8, eta=0.01, gamma=0.55):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, eta=eta, gamma=gamma))
        self.t = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.t += 1
        for group in self.param_groups:
            sigma = (group["eta"] / (1 + self.t) ** group["gamma"]) ** 0.5
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "sq" not in state:
                    state["sq"] = torch.zeros_like(p)
                sq = state["sq"]
                sq.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                avg = sq.sqrt().add_(group["eps"])
                noise = torch.randn_like(avg).mul_(sigma)
                p.addcdiv_(grad, avg, value=-group["lr"])
                p.add_(noise, alpha=-group["lr"])
