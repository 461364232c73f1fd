"""torch.optim style: lists grouped by device and dtype, unpacked from `.items()`, cast to lists.

The grouping returns the same tensors (the op catalog says so), each parameter in exactly one
group: the gradients are dead after the second moment, so `denom` lives in them.
"""

from typing import cast

import torch
from torch import Tensor
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
            grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads, squares, bufs])
            for (_device, _dtype), ((dev_params, dev_grads_, dev_squares, dev_bufs), _) in \
                    grouped.items():
                dev_grads = cast(list[Tensor], dev_grads_)
                torch._foreach_mul_(dev_squares, group["beta"])
                torch._foreach_addcmul_(dev_squares, dev_grads, dev_grads, 1 - group["beta"])
                torch._foreach_mul_(dev_bufs, group["momentum"])
                torch._foreach_add_(dev_bufs, dev_grads)
                denom = torch._foreach_sqrt(dev_squares)
                torch._foreach_add_(denom, group["eps"])
                torch._foreach_addcdiv_(dev_params, dev_bufs, denom, -group["lr"])
