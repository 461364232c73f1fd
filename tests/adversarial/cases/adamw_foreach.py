"""Foreach AdamW with a `foreach` constructor flag: the multi-tensor path builds lists and uses
torch._foreach_* (`exp_avg_sq_sqrt = torch._foreach_sqrt(...)` is a full parameter copy)."""
import math

import torch
from torch.optim import Optimizer

EXPECT = "rewritten"


class AdamWForeach(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 foreach=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                params.append(p)
                grads.append(p.grad)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            if group["foreach"]:
                torch._foreach_mul_(params, 1 - lr * wd)
                torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
                step_sizes = [-lr / (1 - beta1 ** s) for s in steps]
                bc2_sqrt = [math.sqrt(1 - beta2 ** s) for s in steps]
                exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs)
                torch._foreach_div_(exp_avg_sq_sqrt, bc2_sqrt)
                torch._foreach_add_(exp_avg_sq_sqrt, eps)
                torch._foreach_addcdiv_(params, exp_avgs, exp_avg_sq_sqrt, step_sizes)
            else:
                for i, p in enumerate(params):
                    p.mul_(1 - lr * wd)
                    exp_avgs[i].lerp_(grads[i], 1 - beta1)
                    exp_avg_sqs[i].mul_(beta2).addcmul_(grads[i], grads[i], value=1 - beta2)
                    denom = (exp_avg_sqs[i].sqrt() / math.sqrt(1 - beta2 ** steps[i])).add_(eps)
                    p.addcdiv_(exp_avgs[i], denom, value=-lr / (1 - beta1 ** steps[i]))
        return loss
