"""In-place edits of views of the gradient before the update: clip-by-value through
`grad.view(-1)` when contiguous, and per-row mean removal via `grad2d = grad.view(n, -1)`."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class RowCenteredAdam(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, clip=0.6):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, clip=clip))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                flat = grad.view(-1) if grad.is_contiguous() else grad.reshape(-1)
                flat.clamp_(-group["clip"], group["clip"])
                if grad.dim() > 1 and grad.is_contiguous():
                    grad2d = grad.view(grad.shape[0], -1)
                    grad2d.sub_(grad2d.mean(dim=1, keepdim=True))
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = state["v"].sqrt().add_(group["eps"])
                p.addcdiv_(state["m"], denom, value=-group["lr"])
