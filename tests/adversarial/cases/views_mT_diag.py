"""Diagonal Shampoo-lite: `G = grad.reshape(grad.shape[0], -1)`, left/right statistics with
`G @ G.mT`, `torch.diagonal(...)` root inverses and `.unsqueeze` broadcasting; rank-1 falls
back to Adagrad."""
import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


class DiagShampoo(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-4):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                eps = group["eps"]
                if grad.dim() >= 2 and grad.numel() > 0:
                    G = grad.reshape(grad.shape[0], -1)
                    if not state:
                        state["L"] = torch.zeros(G.shape[0], G.shape[0])
                        state["R"] = torch.zeros(G.shape[1], G.shape[1])
                    state["L"].add_(G @ G.mT)
                    state["R"].add_(G.mT @ G)
                    l_inv = torch.diagonal(state["L"]).add(eps).pow(-0.25)
                    r_inv = torch.diagonal(state["R"]).add(eps).pow(-0.25)
                    update = l_inv.unsqueeze(1) * G * r_inv.unsqueeze(0)
                    p.add_(update.view_as(p) if p.is_contiguous() else update.reshape(p.shape),
                           alpha=-group["lr"])
                else:
                    if not state:
                        state["sum"] = torch.zeros_like(p)
                    state["sum"].addcmul_(grad, grad)
                    std = state["sum"].sqrt().add_(eps)
                    p.addcdiv_(grad, std, value=-group["lr"])
