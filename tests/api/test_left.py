"""What a rewritten class still allocates, as the corpus table says it: the temporaries left in
place, or, when none is listed, the code the analysis did not follow."""

from __future__ import annotations

from gsr_rewrite.api.modules import _left
from gsr_rewrite.pipeline import rewrite_source

REBOUND = '''
import torch
from torch.optim import Optimizer


class Rebound(Optimizer):
    def __init__(self, params, lr=1e-2, compiled=False):
        super().__init__(params, dict(lr=lr))
        if compiled:
            self._update = torch.compile(self._update)

    def _update(self, params, grads):
        torch._foreach_add_(params, torch._foreach_sign(grads), alpha=-0.1)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            self._update(params, [p.grad for p in params])
'''


def test_a_class_whose_allocating_code_is_not_followed_says_so() -> None:
    result = rewrite_source(REBOUND, "rebound.py")
    (cls,) = result.classes
    assert not [t for t in cls.temporaries if not t.placed and not t.strips]
    text = _left(cls)
    assert text.startswith("code the analysis does not follow: "), text
    assert "self._update" in text and "rebound.py:" in text, text
