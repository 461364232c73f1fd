"""Adam that also maintains an EMA of the parameters on self (`self.ema[p]`, created with
`p.detach().clone()`) and a step counter on self; the update temporary is plain.
No gradient hosts it: the analysis does not model what a dict on self holds (default-deny: it may
be any gradient), and it is read in every iteration after the update; it is strip-mined instead."""
import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


class AdamEMA(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, ema_decay=0.9):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.ema_decay = ema_decay
        self.ema = {}
        self.num_steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.num_steps += 1
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-group["lr"])
                if p not in self.ema:
                    self.ema[p] = p.detach().clone()
                else:
                    self.ema[p].mul_(self.ema_decay).add_(p, alpha=1 - self.ema_decay)
