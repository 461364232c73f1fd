"""NAdam-like momentum schedule with `mu_product` kept in state as a Python float; the
Nesterov-corrected step uses two addcdiv_ with a shared `denom` temporary."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"


class NAdamLike(Optimizer):
    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["mu_product"] = 1.0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"]
                bias_correction2 = 1 - beta2 ** step
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * group["momentum_decay"])))
                mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * group["momentum_decay"])))
                state["mu_product"] *= mu
                mu_product = state["mu_product"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.div(bias_correction2).sqrt_().add_(group["eps"])
                p.addcdiv_(grad, denom, value=(-group["lr"] * (1.0 - mu) / (1.0 - mu_product)))
                p.addcdiv_(exp_avg, denom,
                           value=(-group["lr"] * mu_next) / (1.0 - mu_product * mu_next))
        return loss
