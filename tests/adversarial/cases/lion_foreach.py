"""Lion with a foreach path (`torch._foreach_lerp` out of place, `torch._foreach_sign_`) and a
for-loop path, chosen per group from a `foreach` flag; decoupled weight decay."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"


class LionForeach(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0, foreach=None):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                params.append(p)
                grads.append(p.grad)
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avgs.append(state["exp_avg"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            if group["foreach"]:
                torch._foreach_mul_(params, 1 - lr * wd)
                updates = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
                torch._foreach_sign_(updates)
                torch._foreach_add_(params, updates, alpha=-lr)
                torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)
            else:
                for p, grad, exp_avg in zip(params, grads, exp_avgs):  # noqa: B905
                    p.mul_(1 - lr * wd)
                    update = exp_avg.lerp(grad, 1 - beta1).sign_()
                    p.add_(update, alpha=-lr)
                    exp_avg.lerp_(grad, 1 - beta2)
        return loss
