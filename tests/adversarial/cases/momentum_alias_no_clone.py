"""SGD momentum whose buffer is created WITHOUT a clone (`buf = state['momentum_buffer'] = d_p`):
with zero weight decay the momentum buffer IS the gradient tensor; Nesterov temporary after."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move
CTOR = {"momentum": 0.9, "nesterov": True}
GROUP2 = {"lr": 0.05}


class SGDNoClone(Optimizer):
    def __init__(self, params, lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if group["weight_decay"] != 0:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    buf = state["momentum_buffer"] = d_p
                else:
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(d_p)
                if group["nesterov"]:
                    d_p = d_p.add(buf, alpha=group["momentum"])
                else:
                    d_p = buf
                p.add_(d_p, alpha=-group["lr"])
