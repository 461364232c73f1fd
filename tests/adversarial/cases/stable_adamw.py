"""StableAdamW (Wortsman et al. 2023): per-tensor update clipping by the RMS of
`grad**2 / max(v, eps**2)` (a gradient-shaped temporary reduced with `.mean()`)."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class StableAdamW(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.lerp_(grad.square(), 1 - beta2)
                bc1 = 1 - beta1 ** state["step"]
                bc2 = 1 - beta2 ** state["step"]
                rms = (grad.pow(2) / torch.maximum(exp_avg_sq / bc2,
                                                   torch.full_like(exp_avg_sq, group["eps"] ** 2))
                       ).mean().sqrt()
                lr = group["lr"] / max(1.0, rms.item())
                p.mul_(1 - lr * group["weight_decay"])
                denom = (exp_avg_sq / bc2).sqrt_().add_(group["eps"])
                p.addcdiv_(exp_avg, denom, value=-lr / bc1)
