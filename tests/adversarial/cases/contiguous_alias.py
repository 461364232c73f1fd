"""`grad = p.grad.contiguous()` and `p_work = p.to(torch.float32)`: conditional aliases (the
same tensor when already contiguous / fp32, a copy otherwise); the update writes `p_work`."""
import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


class ContiguousAdagrad(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=1e-3):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.contiguous()
                p_work = p.to(torch.float32)
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros_like(p_work, memory_format=torch.contiguous_format)
                g32 = grad.to(torch.float32)
                state["sum"].addcmul_(g32, g32, value=1)
                std = state["sum"].sqrt().add_(group["eps"])
                p_work.mul_(1 - group["lr"] * group["weight_decay"])
                p_work.addcdiv_(g32, std, value=-group["lr"])
                p_work.add_(grad.float().sign(), alpha=-group["lr"] * 0.01)
                if p_work is not p:
                    p.copy_(p_work)
