"""Two passes over the params: the first builds per-param updates in a list (momentum-free LARS
with `torch.max(a, b)` element-wise), the second applies them scaled by a GLOBAL ratio
(`max(norms)` over Python floats) and a sign agreement with `p.grad`."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class GlobalLARS(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-8, weight_decay=1e-3, floor=1e-3):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay, floor=floor))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            updates, owners, norms = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "peak" not in state:
                    state["peak"] = torch.zeros_like(p)
                torch.maximum(state["peak"], grad.abs(), out=state["peak"])
                update = grad / torch.max(state["peak"], torch.full_like(grad, group["floor"]))
                update.add_(p, alpha=group["weight_decay"])
                updates.append(update)
                owners.append(p)
                norms.append(float(update.norm()) if update.numel() else 0.0)
            if not updates:
                continue
            scale = group["lr"] / max(max(norms), group["eps"])
            for p, u in zip(owners, updates):  # noqa: B905
                agree = (u * p.grad).ge(0).to(u.dtype)
                p.sub_(u * agree, alpha=scale)
