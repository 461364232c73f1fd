"""Foreach Adam with global-norm clipping done on the gradient list in place
(`torch._foreach_norm`, `torch._foreach_mul_(grads, clip)`), a `foreach` flag, and a
`torch._foreach_add(grads, params, alpha=wd)` L2 temporary list."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class ForeachClipAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-3,
                 max_norm=1.0, foreach=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      max_norm=max_norm, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["m"] = torch.zeros_like(p)
                    self.state[p]["v"] = torch.zeros_like(p)
            ms = [self.state[p]["m"] for p in params]
            vs = [self.state[p]["v"] for p in params]
            beta1, beta2 = group["betas"]
            if group["foreach"]:
                norms = torch._foreach_norm(grads)
                total = torch.linalg.vector_norm(torch.stack(norms))
                clip = (group["max_norm"] / (total + 1e-6)).clamp(max=1.0)
                torch._foreach_mul_(grads, clip)
                if group["weight_decay"]:
                    grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                torch._foreach_lerp_(ms, grads, 1 - beta1)
                torch._foreach_mul_(vs, beta2)
                torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_add_(denom, group["eps"])
                torch._foreach_addcdiv_(params, ms, denom, value=-group["lr"])
            else:
                total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
                clip = (group["max_norm"] / (total + 1e-6)).clamp(max=1.0)
                for p, g, m, v in zip(params, grads, ms, vs):  # noqa: B905
                    g.mul_(clip)
                    if group["weight_decay"]:
                        g = g.add(p, alpha=group["weight_decay"])
                    m.lerp_(g, 1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-group["lr"])
