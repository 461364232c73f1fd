"""LAMB (You et al.) per parameter: `adam_step = exp_avg / denom`, decoupled decay added,
trust ratio `w_norm / a_norm` from two reductions, clamped, with a `torch.where` guard."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"


class LambTrust(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 clamp_value=10.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      clamp_value=clamp_value))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                denom = (exp_avg_sq / bias_correction2).sqrt().add_(group["eps"])
                adam_step = (exp_avg / bias_correction1) / denom
                if group["weight_decay"] != 0:
                    adam_step.add_(p, alpha=group["weight_decay"])
                weight_norm = p.norm(p=2).clamp(0, group["clamp_value"])
                adam_norm = adam_step.norm(p=2)
                trust_ratio = torch.where(
                    (weight_norm > 0) & (adam_norm > 0), weight_norm / adam_norm,
                    torch.ones_like(weight_norm))
                state["weight_norm"] = weight_norm
                state["adam_norm"] = adam_norm
                state["trust_ratio"] = trust_ratio
                p.add_(adam_step, alpha=-group["lr"] * trust_ratio.item())
        return loss
