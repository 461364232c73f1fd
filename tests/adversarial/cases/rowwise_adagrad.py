"""Row-wise Adagrad as used for embedding tables (DLRM/FBGEMM): one accumulator per row,
`std = state["sum"].sqrt().add_(eps).unsqueeze(1)` broadcast against the 2-D gradient."""
import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


class RowWiseAdagrad(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if grad.dim() == 2 and grad.shape[1] > 0:
                    if "sum" not in state:
                        state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype)
                    state["sum"].add_(grad.pow(2).mean(dim=1))
                    std = state["sum"].sqrt().add_(group["eps"]).unsqueeze(1)
                    p.addcdiv_(grad, std, value=-group["lr"])
                else:
                    if "sum" not in state:
                        state["sum"] = torch.zeros_like(p)
                    state["sum"].addcmul_(grad, grad)
                    std = state["sum"].sqrt().add_(group["eps"])
                    p.addcdiv_(grad, std, value=-group["lr"])
