"""A stand-in for the library before.py imports, so that its rewrite can run in the test: the
rewrite itself never sees this file (to the analysis `record` stays an unknown function)."""

import torch

RECORDED: list[torch.Tensor] = []


def record(t: torch.Tensor) -> None:
    RECORDED.append(t)
