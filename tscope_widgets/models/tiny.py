"""A small causal decoder with the knobs that theory papers vary.

Read top to bottom like nanoGPT's ``model.py``: attention, MLP, block, config, model.
Every option changes one line of the forward pass:

- ``norm``: ``"pre"`` (GPT-2), ``"post"`` (original Transformer / BERT) or ``"none"``.
- ``attention``: ``"softmax"`` or ``"linear"`` (softmax removed, ``A = mask(Q K^T) / sqrt(d_head)``,
  the "linear self-attention" of Ormaniec et al., ICLR 2025).
- ``residual_scale`` with ``residual_scale_mode``: ``"both"`` scales both residual *branches*,
  ``x + alpha * f(x)`` for attention and MLP; ``"attention_skip"`` scales only the attention *skip*,
  ``resid_mid = alpha * resid_pre + attn_out`` with the MLP residual unchanged (the fork used by
  Ormaniec, Dangel & Singh, ICLR 2025, for their residual-scaling experiments).
- ``activation``: ``"gelu"`` or ``"relu"``; ``d_mlp=0`` makes an attention-only model.
- ``tie_weights``: the unembedding shares the token-embedding matrix.
- ``bias``, ``attention_bias``, ``head_bias``: biases of the linear layers and norms, of the four attention
  projections (``None``: as ``bias``) and of the unembedding (the layout of Ormaniec et al.'s 3,836-parameter
  model: no attention biases, MLP and unembedding biases).

The attention is always the explicit masked path (no fused kernel) so that forward-mode AD and
double backward work and attention weights stay inspectable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapter import ModelAdapter, ParamSlice
from .head_groups import linear_in_head_slices, linear_out_head_slices
from .heads import LayerHeads, linear_in_heads, linear_out_heads


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with separate q/k/v/o projections."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.d_head = d // cfg.n_head
        self.kind = cfg.attention
        bias = cfg.bias if cfg.attention_bias is None else cfg.attention_bias
        self.q = nn.Linear(d, d, bias=bias)
        self.k = nn.Linear(d, d, bias=bias)
        self.v = nn.Linear(d, d, bias=bias)
        self.o = nn.Linear(d, d, bias=bias)
        # Hook point (no parameters, no computation): its output is the attention weights [B, nh, S, S].
        self.pattern = nn.Identity()

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x: ``[B, S, D]``; key_mask: ``[B, S]`` bool, True where a key may be attended."""
        B, S, D = x.shape
        q = self.q(x).view(B, S, self.n_head, self.d_head).transpose(1, 2)  # [B, nh, S, dh]
        k = self.k(x).view(B, S, self.n_head, self.d_head).transpose(1, 2)  # [B, nh, S, dh]
        v = self.v(x).view(B, S, self.n_head, self.d_head).transpose(1, 2)  # [B, nh, S, dh]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # [B, nh, S, S]
        allowed = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()  # [S, S]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]  # [B, 1, S, S]
        if self.kind == "softmax":
            # finfo.min, not -inf: a query whose keys are all padding gets finite (ignored) output.
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
            weights = F.softmax(scores, dim=-1)
        else:
            weights = scores.masked_fill(~allowed, 0.0)
        weights = self.pattern(weights)  # [B, nh, S, S]
        y = weights @ v  # [B, nh, S, dh]
        y = y.transpose(1, 2).reshape(B, S, D)  # [B, S, D]
        return self.o(y)


class MLP(nn.Module):
    """Position-wise feed-forward: ``out(act(in(x)))``."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.mlp_width, bias=cfg.bias)
        self.fc_out = nn.Linear(cfg.mlp_width, cfg.d_model, bias=cfg.bias)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, S, D] -> [B, S, D]``, through a hidden width of ``mlp_width``."""
        return self.fc_out(self.act(self.fc_in(x)))


def _norm(cfg: TinyConfig) -> nn.Module:
    return nn.Identity() if cfg.norm == "none" else nn.LayerNorm(cfg.d_model, bias=cfg.bias)


class Block(nn.Module):
    """One transformer block; ``norm`` decides where the LayerNorms sit."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.norm = cfg.norm
        self.alpha = cfg.residual_scale
        self.scale_skip = cfg.residual_scale_mode == "attention_skip"
        self.ln1 = _norm(cfg)
        self.attn = SelfAttention(cfg)
        self.ln2 = _norm(cfg)
        self.mlp = MLP(cfg) if cfg.mlp_width > 0 else None

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x: ``[B, S, D]`` -> ``[B, S, D]``; key_mask: ``[B, S]`` bool, True where a key may be attended."""
        # "both": x + a·f(x) on each branch; "attention_skip": a·x + attn(x), then x + mlp(x)
        skip, branch = (self.alpha, 1.0) if self.scale_skip else (1.0, self.alpha)
        if self.norm == "post":
            x = self.ln1(skip * x + branch * self.attn(x, key_mask))
            if self.mlp is not None:
                x = self.ln2(x + branch * self.mlp(x))
            return x
        x = skip * x + branch * self.attn(self.ln1(x), key_mask)
        if self.mlp is not None:
            x = x + branch * self.mlp(self.ln2(x))
        return x


@dataclass
class TinyConfig:
    """Configuration of :class:`TinyTransformer`."""

    vocab_size: int = 64
    max_seq_len: int = 64
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_mlp: int | None = None  # None -> 4 * d_model; 0 -> attention-only
    norm: Literal["pre", "post", "none"] = "pre"  # theory knob
    attention: Literal["softmax", "linear"] = "softmax"  # theory knob
    residual_scale: float = 1.0
    # "both": x + a·f(x) on attention and MLP branches; "attention_skip": a·x + attn(x), MLP residual as is
    residual_scale_mode: Literal["both", "attention_skip"] = "both"
    activation: Literal["gelu", "relu"] = "gelu"
    tie_weights: bool = False
    bias: bool = True
    attention_bias: bool | None = None  # None: as bias
    head_bias: bool = False

    def __post_init__(self):
        checks = {
            "norm": (self.norm, ("pre", "post", "none")),
            "attention": (self.attention, ("softmax", "linear")),
            "activation": (self.activation, ("gelu", "relu")),
            "residual_scale_mode": (self.residual_scale_mode, ("both", "attention_skip")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"TinyConfig.{name}={value!r}; expected one of {allowed}")
        for name in ("vocab_size", "max_seq_len", "d_model", "n_layer", "n_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"TinyConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_mlp is not None and self.d_mlp < 0:
            raise ValueError(f"TinyConfig.d_mlp must be >= 0 (0 = attention-only), got {self.d_mlp}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP: ``d_mlp``, or ``4 * d_model`` when unset (0 = attention-only)."""
        return 4 * self.d_model if self.d_mlp is None else self.d_mlp


class TinyTransformer(nn.Module):
    """Causal decoder: token + position embeddings, ``n_layer`` blocks, final norm, LM head.

    ``forward`` returns logits ``[B, S, vocab_size]`` for every position.
    """

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # Pre-norm needs a final norm (GPT-2); post-norm already ends normalized.
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.head_bias)
        if cfg.tie_weights:
            self.head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # residual projections: std / sqrt(2 n_layer), per GPT-2 paper
            if name.endswith(("attn.o.weight", "mlp.fc_out.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, S, V]`` from ``input_ids [B, S]`` or token embeddings ``inputs_embeds [B, S, D]``.

        ``attention_mask [B, S]`` (1 = token, 0 = padding) removes padded keys. ``inputs_embeds``
        excludes position embeddings, as in Hugging Face models.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # [B, S, D]
        S = x.shape[1]
        if S > self.config.max_seq_len:
            raise ValueError(f"sequence length {S} exceeds max_seq_len={self.config.max_seq_len}")
        x = x + self.wpe.weight[:S]
        key_mask = None if attention_mask is None else attention_mask.bool()
        for block in self.blocks:
            x = block(x, key_mask)
        return self.head(self.ln_f(x))


class TinyAdapter(ModelAdapter):
    """Adapter for :class:`TinyTransformer` (see :class:`ModelAdapter`)."""

    causal = True

    @property
    def blocks(self) -> nn.ModuleList:
        """The model's ``blocks``."""
        return self.model.blocks

    @property
    def final_norm(self) -> nn.Module | None:
        """``ln_f``, or ``None`` when the model has no final norm (``norm="post"`` or ``"none"``)."""
        return None if isinstance(self.model.ln_f, nn.Identity) else self.model.ln_f

    @property
    def embedding(self) -> nn.Embedding:
        """The token embedding ``wte`` (``[V, D]``)."""
        return self.model.wte

    @property
    def max_positions(self) -> int:
        """``max_seq_len``: the rows of the learned position embedding ``wpe``."""
        return self.model.config.max_seq_len

    def _run(self, inputs_embeds: Tensor, attention_mask: Tensor | None) -> Tensor:
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)

    @property
    def attention_kind(self) -> str:
        """``config.attention``: ``"softmax"`` or ``"linear"``."""
        return self.model.config.attention

    def _layer_heads(self, block: int) -> LayerHeads:
        attn = self.blocks[block].attn
        n = attn.n_head
        return LayerHeads(
            q=linear_in_heads(attn.q.weight, n),
            k=linear_in_heads(attn.k.weight, n),
            v=linear_in_heads(attn.v.weight, n),
            o=linear_out_heads(attn.o.weight, n),
        )

    def _attention_probe(self, block: int):
        return self.blocks[block].attn.pattern, lambda output: output

    def _head_param_slices(self, params, block):
        p, n = f"blocks.{block}.attn", self.blocks[block].attn.n_head
        return {
            **{kind: linear_in_head_slices(params, f"{p}.{kind}", n) for kind in "qkv"},
            "o": linear_out_head_slices(params, f"{p}.o", n),
        }

    def _param_groups(self) -> dict[str, list[ParamSlice]]:
        """Groups ``embed`` (wte, wpe), ``block{l}.attn.q|k|v|o``, ``block{l}.mlp.in|out``,
        ``block{l}.ln1|ln2``, ``ln_f`` and ``head`` (absent when tied to ``embed``); each holds the
        weight and, where present, the bias. Norm groups are absent with ``norm="none"``."""
        params = dict(self.model.named_parameters())  # tied weights appear once, under wte

        def group(prefix: str) -> list[ParamSlice]:
            return [ParamSlice(f"{prefix}.{s}") for s in ("weight", "bias") if f"{prefix}.{s}" in params]

        groups = {"embed": group("wte") + group("wpe")}
        for i in range(self.num_layers):
            p = f"blocks.{i}"
            for short, full in [("attn.q", "attn.q"), ("attn.k", "attn.k"), ("attn.v", "attn.v"),
                                ("attn.o", "attn.o"), ("mlp.in", "mlp.fc_in"), ("mlp.out", "mlp.fc_out"),
                                ("ln1", "ln1"), ("ln2", "ln2")]:
                g = group(f"{p}.{full}")
                if g:
                    groups[f"block{i}.{short}"] = g
        for name, prefix in [("ln_f", "ln_f"), ("head", "head")]:
            g = group(prefix)
            if g:
                groups[name] = g
        return groups
