"""Models for the memory benchmark: tiny CPU models (no extra dependencies), timm vision models and
`transformers` decoders built from configs with random weights (nothing is downloaded).

timm and transformers are imported lazily (importlib) inside the builders: only the GPU rows need
them, and installing them on a CPU-only box pulls torchvision or a CUDA torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["MODELS", "CPU_DEFAULT_MODELS", "CUDA_DEFAULT_MODELS", "ModelSpec", "get_model"]

Batch = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model, feed it a batch of 1 and switch on activation checkpointing."""

    name: str
    family: Literal["vision", "language"]
    source: Literal["tiny", "timm", "transformers"]
    build: Callable[[], nn.Module]
    make_batch: Callable[[torch.device], Batch]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    enable_checkpointing: Callable[[nn.Module], None]
    description: str


# --- tiny models (CPU, CI) -------------------------------------------------------------------


class _Block(nn.Module):
    """Pre-norm transformer block (attention + 4x MLP): 12 * dim**2 weights."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        out: torch.Tensor = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return out


class _Blocks(nn.Module):
    """A stack of blocks with timm's ``set_grad_checkpointing`` switch (a checkpoint per block)."""

    def __init__(self, dim: int, depth: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(dim, heads, causal) for _ in range(depth))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x


class TinyViT(_Blocks):
    """ViT on 32x32 images, 4x4 patches (64 tokens + class), dim 128, depth 6: 1.2 M params."""

    def __init__(self, img: int = 32, patch: int = 4, dim: int = 128, depth: int = 6) -> None:
        super().__init__(dim, depth, heads=4, causal=False)
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, dim) * 0.02)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        logits: torch.Tensor = self.head(self.norm(self.run_blocks(x))[:, 0])
        return logits


class TinyGPT(_Blocks):
    """Causal decoder, vocab 1024, context 384, dim 192, depth 4: 2.2 M params. Without
    checkpointing its activations outweigh AdamW's temporaries (forward+backward is the peak, an
    R-variant cannot help); with checkpointing the optimizer step becomes the peak."""

    def __init__(self, vocab: int = 1024, ctx: int = 384, dim: int = 192, depth: int = 4) -> None:
        super().__init__(dim, depth, heads=4, causal=True)
        self.ctx = ctx
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(ctx, dim)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        logits: torch.Tensor = self.head(self.norm(self.run_blocks(self.tok(ids) + self.pos(pos))))
        return logits


def _image_batch(size: int, classes: int) -> Callable[[torch.device], Batch]:
    def make(device: torch.device) -> Batch:
        images = torch.randn(1, 3, size, size, device=device)
        return images, torch.randint(0, classes, (1,), device=device)

    return make


def _token_batch(vocab: int, ctx: int) -> Callable[[torch.device], Batch]:
    def make(device: torch.device) -> Batch:
        return (torch.randint(0, vocab, (1, ctx), device=device),)

    return make


def _classification_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(model(images), labels)


def _next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    (ids,) = batch
    logits = model(ids)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def _hf_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    (ids,) = batch
    loss: torch.Tensor = model(input_ids=ids, labels=ids).loss  # shifted inside the model
    return loss


def _timm_checkpointing(model: nn.Module) -> None:
    model.set_grad_checkpointing(True)  # type: ignore[operator]


def _hf_checkpointing(model: nn.Module) -> None:
    kwargs = {"use_reentrant": False}  # as timm and the tiny models do
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[operator]


# --- timm vision models (GPU rows) ------------------------------------------------------------

# ViT /32 at 224 px (49 patches + class token). The class is built directly with the shapes of the
# timm entry points (vit_{small,base,large}_patch32_224; huge and gigantic exist only as /14 entry
# points, so their shapes get patch 32 here): no registry lookup that could drift.
_VIT_SHAPES: dict[str, tuple[int, int, int, float]] = {  # embed_dim, depth, heads, mlp_ratio
    "vit_s_32": (384, 12, 6, 4.0),  # 22.9 M params
    "vit_b_32": (768, 12, 12, 4.0),  # 88.2 M
    "vit_l_32": (1024, 24, 16, 4.0),  # 306 M
    "vit_h_32": (1280, 32, 16, 4.0),  # 634 M
    "vit_g_32": (1664, 48, 16, 64 / 13),  # ViT-G (gigantic): 1.84 B
}
_CONVNEXT = {
    "convnext_t": "convnext_tiny",
    "convnext_s": "convnext_small",
    "convnext_b": "convnext_base",
    "convnext_l": "convnext_large",
    "convnext_xl": "convnext_xlarge",
}


def _vit(shape: tuple[int, int, int, float]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        vit = importlib.import_module("timm.models.vision_transformer")
        dim, depth, heads, mlp_ratio = shape
        model: nn.Module = vit.VisionTransformer(
            img_size=224,
            patch_size=32,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=mlp_ratio,
            num_classes=1000,
        )
        return model

    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        timm = importlib.import_module("timm")
        model: nn.Module = timm.create_model(name, pretrained=False, num_classes=1000)
        return model

    return build


# --- transformers decoders (GPU rows), configs from the published hyperparameters -------------

_HF_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", {"n_positions": 1024}),  # defaults are GPT-2 small: 124 M
    "llama_1b": (  # TinyLlama-1.1B shapes: 1.10 B
        "LlamaConfig",
        dict(
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            vocab_size=32000,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
    ),
    "qwen2_0_5b": (  # 494 M (embeddings tied)
        "Qwen2Config",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=32768,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
    ),
    "phi_1_5": (  # 1.42 B
        "PhiConfig",
        dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=24,
            num_attention_heads=32,
            vocab_size=51200,
            max_position_embeddings=2048,
            partial_rotary_factor=0.5,
            tie_word_embeddings=False,
        ),
    ),
    "bloom_560m": ("BloomConfig", dict(hidden_size=1024, n_layer=24, n_head=16, vocab_size=250880)),
}
HF_CONTEXT = 1024


def _hf(config_class: str, kwargs: dict[str, Any]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        transformers = importlib.import_module("transformers")
        config = getattr(transformers, config_class)(**kwargs, use_cache=False)  # no KV cache
        model: nn.Module = transformers.AutoModelForCausalLM.from_config(config)
        return model

    return build


def _vision(name: str, source: Any, build: Any, px: int, classes: int, about: str) -> ModelSpec:
    loss, ckpt = _classification_loss, _timm_checkpointing
    return ModelSpec(name, "vision", source, build, _image_batch(px, classes), loss, ckpt, about)


def _registry() -> dict[str, ModelSpec]:
    tiny_gpt_about = "tiny causal decoder, context 384, dim 192, depth 4 (CPU)"
    specs = [
        _vision("tiny_vit", "tiny", TinyViT, 32, 10, "tiny ViT, 32 px, dim 128, depth 6 (CPU)"),
        ModelSpec(
            "tiny_gpt",
            "language",
            "tiny",
            TinyGPT,
            _token_batch(1024, 384),
            _next_token_loss,
            _timm_checkpointing,
            tiny_gpt_about,
        ),
    ]
    for name, shape in _VIT_SHAPES.items():
        about = f"timm VisionTransformer dim {shape[0]}, depth {shape[1]}, patch 32, 224 px"
        specs.append(_vision(name, "timm", _vit(shape), 224, 1000, about))
    for name, timm_name in _CONVNEXT.items():
        specs.append(
            _vision(name, "timm", _timm(timm_name), 224, 1000, f"timm {timm_name}, 224 px")
        )
    for name, (config_class, kwargs) in _HF_CONFIGS.items():
        vocab = int(kwargs.get("vocab_size", 50257))  # GPT2Config's default vocabulary
        about = f"transformers {config_class}, random weights, context {HF_CONTEXT}"
        batch = _token_batch(vocab, HF_CONTEXT)
        build = _hf(config_class, kwargs)
        specs.append(
            ModelSpec(
                name, "language", "transformers", build, batch, _hf_loss, _hf_checkpointing, about
            )
        )
    return {spec.name: spec for spec in specs}


MODELS: dict[str, ModelSpec] = _registry()
CPU_DEFAULT_MODELS = ("tiny_vit", "tiny_gpt")
CUDA_DEFAULT_MODELS = tuple(name for name, spec in MODELS.items() if spec.source != "tiny")


def get_model(name: str) -> ModelSpec:
    """A built-in model, or the user's own: `package.module:function` returning a ModelSpec."""
    if ":" in name:
        module, _, attr = name.partition(":")
        spec = getattr(importlib.import_module(module), attr)()
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"{name} returned {type(spec).__name__}, not a ModelSpec")
        return spec
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ValueError(f"unknown model {name!r}; known: {known} (or module:function "
                         "returning a gsr_rewrite.bench.models.ModelSpec)") from None
