import torch
from torch.optim import Optimizer


class RMSMomentum(Optimizer):
    def __init__(self, params, lr=0.01, beta=0.99, momentum=0.9, eps=1e-8, foreach=None):
        super().__init__(params, dict(lr=lr, beta=beta, momentum=momentum, eps=eps,
                                      foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads, squares, bufs = [], [], [], []
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    if len(state) == 0:
                        state["square_avg"] = torch.zeros_like(p)
                        state["momentum_buffer"] = torch.zeros_like(p)
                    params.append(p)
                    grads.append(p.grad)
                    squares.append(state["square_avg"])
                    bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(squares, group["beta"])
            torch._foreach_addcmul_(squares, grads, grads, 1 - group["beta"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            denom = torch._foreach_sqrt(squares)  # one parameter-size list; grads are dead here
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, bufs, denom, -group["lr"])
