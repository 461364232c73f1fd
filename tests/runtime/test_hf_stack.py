"""R-variants inside Hugging Face `transformers.Trainer`: a tiny GPT-2 built from a config (no
download), trained a few steps on random tokens, single process on CPU, gradient checkpointing
off and on, AdamW's for-loop and foreach paths.

Each R run is compared with the same run (same seed, data, dropout, param groups, LR schedule,
gradient clipping) under torch's own AdamW: final parameters bitwise equal, the rewritten
statements ran and no step fell back to the original, and one further step, triggered by the test
after a backward through `Trainer.training_step`, is measured through the Trainer's own
(accelerate-wrapped) optimizer: the original allocates its temporaries, the R step ≤ 0.05 of the
parameter size.

Two ways in: the R class given to the Trainer (`optimizer_cls_and_kwargs=(AdamWR, kwargs)`, the
Trainer builds its param groups), and `gsr_rewrite.install()` on a torch AdamW object given as
`optimizers=(opt, None)` (its type stays `torch.optim.AdamW`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer needs it

from gsr_rewrite import install, runtime  # noqa: E402
from gsr_rewrite.proof.memory import measure_step_peak_bytes  # noqa: E402
from gsr_rewrite.runtime import precondition  # noqa: E402

STEPS = 4
KWARGS: dict[str, Any] = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
# transformers 5 renamed `gradient_checkpointing` (deprecated, removed in v6)
_CKPT_ARG = ("activation_checkpointing" if hasattr(transformers.TrainingArguments,
                                                    "activation_checkpointing")
             else "gradient_checkpointing")


class _Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Random token sequences, the same on every construction (labels = inputs: causal LM)."""

    def __init__(self, n: int = 16, length: int = 32, vocab: int = 128) -> None:
        g = torch.Generator().manual_seed(1234)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=128,
                                     n_positions=64)
    return transformers.GPT2LMHeadModel(config)


def _groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on matrices, none on biases and norms (what people pass themselves)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _train(tmp: Path, checkpointing: bool, optimizer: Any) -> dict[str, Any]:
    """Train STEPS steps; `optimizer` is ("cls", OptimizerClass, kwargs) for
    `optimizer_cls_and_kwargs` or ("object", make(model) -> optimizer) for `optimizers=`.
    Returns the final params, the guard hits and fallbacks of the run, the optimizer's type, and
    the temporaries of one more step (in parameter sizes)."""
    model = _model()
    args = transformers.TrainingArguments(
        output_dir=str(tmp), max_steps=STEPS, per_device_train_batch_size=4, seed=7,
        use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
        learning_rate=KWARGS["lr"], lr_scheduler_type="linear", warmup_steps=1,
        max_grad_norm=1.0, **{_CKPT_ARG: checkpointing})
    given: dict[str, Any] = {}
    if optimizer[0] == "cls":
        given["optimizer_cls_and_kwargs"] = (optimizer[1], optimizer[2])
    else:
        given["optimizers"] = (optimizer[1](model), None)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens(), **given)
    hits, falls = runtime.GUARD_HITS[0], precondition._FALLBACKS[0]
    trainer.train()
    seen: dict[str, Any] = {"guard_hits": runtime.GUARD_HITS[0] - hits,
                            "fallbacks": precondition._FALLBACKS[0] - falls}
    assert trainer.state.global_step == STEPS
    assert model.transformer.h[0].attn.c_attn.weight.requires_grad
    assert getattr(model, "is_" + _CKPT_ARG) == checkpointing  # the Trainer switched it
    seen["params"] = [p.detach().clone() for p in model.parameters()]
    inner = trainer.optimizer.optimizer  # accelerate's AcceleratedOptimizer wraps it
    seen["type"] = type(inner)
    seen["foreach"] = [g["foreach"] for g in inner.param_groups]

    # one more step, triggered here: a backward through the Trainer, then the Trainer's optimizer
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.training_step(model, batch)
    params = [p for g in inner.param_groups for p in g["params"] if p.grad is not None]
    assert len(params) == len(list(model.parameters()))
    falls = precondition._FALLBACKS[0]
    peak = measure_step_peak_bytes(trainer.optimizer)
    seen["fallbacks"] += precondition._FALLBACKS[0] - falls
    seen["units"] = peak / sum(p.numel() * p.element_size() for p in params)
    seen["largest"] = max(p.numel() for p in params) / sum(p.numel() for p in params)
    return seen


def _bitwise(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _check(original: dict[str, Any], rewritten: dict[str, Any], foreach: bool) -> None:
    assert _bitwise(original["params"], rewritten["params"])
    assert not _bitwise(original["params"], [p.detach() for p in _model().parameters()])
    assert original["guard_hits"] == 0 and original["fallbacks"] == 0
    assert rewritten["guard_hits"] > 0, rewritten  # the rewritten statements ran
    assert rewritten["fallbacks"] == 0, rewritten  # no step took the original path
    assert rewritten["foreach"] == original["foreach"] == [foreach, foreach]
    if foreach:  # one list of temporaries per param group: the larger group is most of the model
        assert original["units"] >= 0.9, original
    else:  # single tensors: at least the largest param
        assert original["units"] >= original["largest"], original
    assert rewritten["units"] <= 0.05, rewritten


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-ckpt", "ckpt"])
def test_trainer_with_the_r_class(tmp_path: Path, checkpointing: bool, foreach: bool) -> None:
    from gsr_rewrite.optim import AdamWR

    kwargs = {**KWARGS, "foreach": foreach}
    original = _train(tmp_path, checkpointing, ("cls", torch.optim.AdamW, kwargs))
    rewritten = _train(tmp_path, checkpointing, ("cls", AdamWR, kwargs))
    assert original["type"] is torch.optim.AdamW and rewritten["type"] is AdamWR
    _check(original, rewritten, foreach)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-ckpt", "ckpt"])
def test_trainer_with_an_installed_torch_adamw(tmp_path: Path, checkpointing: bool,
                                               foreach: bool) -> None:
    kwargs = {k: v for k, v in KWARGS.items() if k != "weight_decay"}

    def plain(model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(_groups(model, KWARGS["weight_decay"]), foreach=foreach,
                                 **kwargs)

    original = _train(tmp_path, checkpointing, ("object", plain))
    installed = _train(tmp_path, checkpointing, ("object", lambda m: install(plain(m))))
    assert original["type"] is torch.optim.AdamW
    assert installed["type"] is torch.optim.AdamW  # the type a framework may check is kept
    _check(original, installed, foreach)
