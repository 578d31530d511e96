"""Adapters for Hugging Face transformers: GPT-2, the Llama family (Llama, Qwen2, Mistral), GPT-NeoX, BERT.

Each adapter names a model's token embedding, blocks, final norm and LM head for :class:`ModelAdapter`,
and groups its parameters (``param_groups``) into ``embed``, ``block{l}.attn.q|k|v|o``,
``block{l}.mlp.in|out``, ``block{l}.ln1|ln2``, ``ln_f`` and ``head``. Fused projections are
addressed by views, never copied: GPT-2's ``c_attn`` by column slices, GPT-NeoX's head-interleaved
``query_key_value`` through ``ParamSlice.view_shape``.

Analysis copies (``adapter.analysis(dtype)``) compute in their own dtype and use the slope-saving GELU:
:meth:`HFAdapter._prepare_analysis_copy` applies :mod:`.numerics` to the copy. The user's model keeps
its classes, its config and its attention implementation.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn
from transformers import (
    BertForMaskedLM,
    BertModel,
    GPT2LMHeadModel,
    GPT2Model,
    GPTNeoXForCausalLM,
    GPTNeoXModel,
    LlamaForCausalLM,
    LlamaModel,
    MistralForCausalLM,
    MistralModel,
    PretrainedConfig,
    Qwen2ForCausalLM,
    Qwen2Model,
)

from ..adapter import ModelAdapter, ParamSlice
from ..head_groups import (
    conv1d_fused_head_slices,
    conv1d_out_head_slices,
    interleaved_qkv_head_slices,
    linear_in_head_slices,
    linear_out_head_slices,
)
from ..heads import (
    LayerHeads,
    conv1d_in_heads,
    conv1d_out_heads,
    interleaved_qkv_heads,
    linear_in_heads,
    linear_out_heads,
)
from .numerics import make_dtype_faithful, use_slope_saving_gelu


# ----- adapters ---------------------------------------------------------------------------------
def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _whole(params: dict[str, Tensor], *modules: str) -> list[ParamSlice]:
    """``weight`` and ``bias`` (where present, and not tied away) of each module path, in order."""
    return [ParamSlice(n) for m in modules for s in ("weight", "bias") if (n := f"{m}.{s}") in params]


class HFAdapter(ModelAdapter):
    """Shared parts of the Hugging Face adapters; a subclass describes one architecture.

    Subclass attributes:
        families: ``{family name: (LM classes, bare-model classes)}``.
        base_attr: Attribute of an LM model that holds the bare model (``"transformer"`` for GPT-2).
        blocks_attr, embed_attr, final_norm_attr: Dotted paths inside the bare model.
        positions_attr: Config field bounding the sequence length for learned positions, or ``None``.
        upcasts_in_float64: Whether transformers' own code computes parts of a float64 model in float32.
    """

    families: dict[str, tuple[tuple[type, ...], tuple[type, ...]]] = {}
    base_attr: str = ""
    blocks_attr: str = ""
    embed_attr: str = ""
    final_norm_attr: str | None = None
    positions_attr: str | None = None
    upcasts_in_float64: bool = False

    def __init__(self, model: nn.Module):
        if not isinstance(model, self.lm_classes() + self.base_classes()):
            raise TypeError(f"{type(self).__name__} does not handle {type(model).__name__}")
        super().__init__(model)

    @classmethod
    def lm_classes(cls) -> tuple[type, ...]:
        """The model classes with a language-modelling head that this adapter handles, over all families."""
        return tuple(c for lm, _ in cls.families.values() for c in lm)

    @classmethod
    def base_classes(cls) -> tuple[type, ...]:
        """The bare-model classes (no head) that this adapter handles, over all families."""
        return tuple(c for _, base in cls.families.values() for c in base)

    # ----- structure --------------------------------------------------------------------------
    @property
    def has_lm_head(self) -> bool:
        """Whether the model has a language-modelling head (``logits`` and ``loss`` need one)."""
        return isinstance(self.model, self.lm_classes())

    @property
    def base(self) -> nn.Module:
        """The bare transformer (embeddings and blocks) inside the model."""
        return getattr(self.model, self.base_attr) if self.has_lm_head else self.model

    @property
    def _prefix(self) -> str:
        return f"{self.base_attr}." if self.has_lm_head else ""

    @property
    def config(self) -> PretrainedConfig:
        """The model's Hugging Face config (shared with its bare model)."""
        return self.model.config

    @property
    def max_positions(self) -> int | None:
        """The config's ``positions_attr`` (e.g. GPT-2's ``n_positions``), ``None`` for rotary positions."""
        return None if self.positions_attr is None else int(getattr(self.config, self.positions_attr))

    @property
    def blocks(self) -> nn.ModuleList:
        """The blocks, at ``blocks_attr`` inside the bare model."""
        return _get(self.base, self.blocks_attr)

    @property
    def embedding(self) -> nn.Embedding:
        """The token embedding ``[V, D]``, at ``embed_attr`` inside the bare model."""
        return _get(self.base, self.embed_attr)

    @property
    def final_norm(self) -> nn.Module | None:
        """The final norm at ``final_norm_attr``, or ``None`` for an architecture without one (BERT)."""
        return None if self.final_norm_attr is None else _get(self.base, self.final_norm_attr)

    @property
    def attn_implementation(self) -> str:
        """The attention implementation the model runs (``"tscope_eager"`` on analysis copies)."""
        return self.config._attn_implementation

    @property
    def precision_note(self) -> str | None:
        """What limits the numerical precision of this adapter's forward, or ``None`` if nothing does."""
        if self.dtype != torch.float64 or not self.upcasts_in_float64:
            return None
        if not self.is_analysis_copy:
            return (
                "transformers computes RMSNorm, rotary embeddings and/or the attention softmax of this "
                "float64 model in float32; use adapter.analysis(torch.float64) for a copy that stays "
                "in float64"
            )
        if self.has_rotary:
            return (
                "all arithmetic runs in float64; the rotary inverse frequencies are the model's inv_freq "
                "buffer, which transformers computes in float32 when the model is built (constants "
                "rounded to ~6e-8)"
            )
        return None

    @property
    def has_rotary(self) -> bool:
        """Whether the bare model has rotary position embeddings (``rotary_emb``: Llama family, GPT-NeoX)."""
        return hasattr(self.base, "rotary_emb")

    # ----- forward ----------------------------------------------------------------------------
    def _require_lm_head(self) -> None:
        if not self.has_lm_head:
            names = ", ".join(c.__name__ for c in self.lm_classes())
            raise TypeError(
                f"{type(self.model).__name__} has no language-modelling head, so logits and loss are "
                f"undefined; load the model with a head ({names}). forward_from_embeddings works without one."
            )

    def _check_embeds(self, inputs_embeds: Tensor, attention_mask: Tensor | None) -> None:
        if (
            not isinstance(inputs_embeds, Tensor)
            or inputs_embeds.ndim != 3
            or inputs_embeds.shape[-1] != self.d_model
        ):
            shape = (
                tuple(inputs_embeds.shape)
                if isinstance(inputs_embeds, Tensor)
                else type(inputs_embeds).__name__
            )
            raise ValueError(f"embeddings must have shape [batch, seq, {self.d_model}], got {shape}")
        if inputs_embeds.dtype != self.dtype:
            raise TypeError(
                f"embeddings have dtype {inputs_embeds.dtype} but the model is {self.dtype}; convert them, "
                f"or use adapter.analysis(dtype={inputs_embeds.dtype})"
            )
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(inputs_embeds.shape[:2]):
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match the embeddings' "
                f"[batch, seq] = {tuple(inputs_embeds.shape[:2])}"
            )
        if self.positions_attr is not None:
            max_len = getattr(self.config, self.positions_attr)
            if inputs_embeds.shape[1] > max_len:
                raise ValueError(
                    f"sequence length {inputs_embeds.shape[1]} exceeds the model's "
                    f"{self.positions_attr}={max_len}"
                )

    def _run(self, inputs_embeds: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Logits ``[B, S, V]`` from token embeddings ``[B, S, D]`` through the model's own forward."""
        self._check_embeds(inputs_embeds, attention_mask)
        out = self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, return_dict=True
        )
        # Hooks of forward_from_embeddings stop a bare model before this point; only logits() gets here.
        self._require_lm_head()
        return out.logits

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits ``[B, S, V]`` of ``input_ids [B, S]`` (validated); needs an LM head."""
        self._require_lm_head()
        input_ids, attention_mask = self.check_inputs(input_ids, attention_mask)
        return super().logits(input_ids, attention_mask)

    def loss(self, batch) -> Tensor:
        """Mean token cross-entropy (see :meth:`ModelAdapter.loss`); needs an LM head."""
        self._require_lm_head()
        return super().loss(batch)

    def _prepare_analysis_copy(self, model: nn.Module, dtype: torch.dtype) -> None:
        make_dtype_faithful(model)
        use_slope_saving_gelu(model)

    # ----- attention heads --------------------------------------------------------------------
    attention_attr: str = ""  # path of the module returning (output, weights) inside a block

    def _heads_of(self, block: nn.Module) -> LayerHeads:
        """Per-head weight views of one block (each family's adapter knows its projections and overrides this)."""
        raise NotImplementedError(f"{type(self).__name__} does not slice attention heads (no per-head weights for it)")

    def _layer_heads(self, block: int) -> LayerHeads:
        try:
            return self._heads_of(self.blocks[block])
        except AttributeError as err:
            raise TypeError(
                f"block {block} of {type(self.model).__name__} lacks the attention projections "
                f"{type(self).__name__} expects ({err}); was the model modified?"
            ) from None

    def _attention_probe(self, block: int):
        try:
            module = _get(self.blocks[block], self.attention_attr)
        except AttributeError:
            raise TypeError(
                f"block {block} of {type(self.model).__name__} has no attention module at "
                f"{self.attention_attr!r}; was the model modified?"
            ) from None
        return module, lambda output: output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None

    # ----- parameter groups -------------------------------------------------------------------
    @abc.abstractmethod
    def _block_groups(self, params: dict[str, Tensor], p: str) -> dict[str, list[ParamSlice]]:
        """``{"attn.q": [...], ..., "ln2": [...]}`` for the block whose parameters start with ``p``."""

    def _embed_paths(self) -> list[str]:
        return [self.embed_attr]

    def _head_groups(self, params: dict[str, Tensor]) -> list[ParamSlice]:
        return _whole(params, "lm_head") if self.has_lm_head else []

    def _param_groups(self) -> dict[str, list[ParamSlice]]:
        """Ordered ``{group: [ParamSlice, ...]}``: ``embed``, ``block{l}.attn.q|k|v|o``,
        ``block{l}.mlp.in|out``, ``block{l}.ln1|ln2``, ``ln_f`` and ``head`` (absent when tied to
        the embedding or missing).

        Each group holds weights and biases; fused parameters are split by views (no copies).
        """
        params = dict(self.model.named_parameters())  # a tied weight appears once, under its first name
        pre = self._prefix
        groups = {"embed": _whole(params, *(pre + e for e in self._embed_paths()))}
        for i in range(self.num_layers):
            for name, slices in self._block_groups(params, f"{pre}{self.blocks_attr}.{i}").items():
                if slices:
                    groups[f"block{i}.{name}"] = slices
        if self.final_norm_attr is not None:
            groups["ln_f"] = _whole(params, pre + self.final_norm_attr)
        head = self._head_groups(params)
        if head:
            groups["head"] = head
        return {k: v for k, v in groups.items() if v}


class GPT2Adapter(HFAdapter):
    """GPT-2 (Radford et al., 2019): pre-norm, learned positions, fused ``c_attn`` (Conv1D, ``[D, 3D]``)."""

    families = {"GPT-2": ((GPT2LMHeadModel,), (GPT2Model,))}
    base_attr, blocks_attr, embed_attr, final_norm_attr = "transformer", "h", "wte", "ln_f"
    positions_attr = "n_positions"

    attention_attr = "attn"

    def _embed_paths(self) -> list[str]:
        return ["wte", "wpe"]

    def _heads_of(self, block):
        n = block.attn.num_heads
        q, k, v = conv1d_in_heads(block.attn.c_attn.weight, n, parts=3)
        return LayerHeads(q=q, k=k, v=v, o=conv1d_out_heads(block.attn.c_proj.weight, n))

    def _head_param_slices(self, params, block):
        p, n = f"{self._prefix}{self.blocks_attr}.{block}.attn", self.blocks[block].attn.num_heads
        return {
            **{kind: conv1d_fused_head_slices(params, f"{p}.c_attn", n, part) for part, kind in enumerate("qkv")},
            "o": conv1d_out_head_slices(params, f"{p}.c_proj", n),
        }

    def _block_groups(self, params, p):
        D = self.d_model
        qkv = {}
        for i, part in enumerate("qkv"):
            cols = slice(i * D, (i + 1) * D)
            qkv[f"attn.{part}"] = [ParamSlice(f"{p}.attn.c_attn.weight", (slice(None), cols))] + (
                [ParamSlice(f"{p}.attn.c_attn.bias", (cols,))] if f"{p}.attn.c_attn.bias" in params else []
            )
        return {
            **qkv,
            "attn.o": _whole(params, f"{p}.attn.c_proj"),
            "mlp.in": _whole(params, f"{p}.mlp.c_fc"),
            "mlp.out": _whole(params, f"{p}.mlp.c_proj"),
            "ln1": _whole(params, f"{p}.ln_1"),
            "ln2": _whole(params, f"{p}.ln_2"),
        }


class LlamaFamilyAdapter(HFAdapter):
    """Llama (Touvron et al., 2023), Qwen2 and Mistral: pre-RMSNorm, rotary positions, grouped-query
    attention, SwiGLU MLP (``gate_proj`` and ``up_proj`` form ``mlp.in``, ``down_proj`` is ``mlp.out``)."""

    families = {
        "Llama": ((LlamaForCausalLM,), (LlamaModel,)),
        "Qwen2": ((Qwen2ForCausalLM,), (Qwen2Model,)),
        "Mistral": ((MistralForCausalLM,), (MistralModel,)),
    }
    base_attr, blocks_attr, embed_attr, final_norm_attr = "model", "layers", "embed_tokens", "norm"
    upcasts_in_float64 = True
    attention_attr = "self_attn"

    def _heads_of(self, block):
        a, cfg = block.self_attn, self.config
        n, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        return LayerHeads(
            q=linear_in_heads(a.q_proj.weight, n),
            k=linear_in_heads(a.k_proj.weight, n_kv),
            v=linear_in_heads(a.v_proj.weight, n_kv),
            o=linear_out_heads(a.o_proj.weight, n),
        )

    def _head_param_slices(self, params, block):
        a, cfg = f"{self._prefix}{self.blocks_attr}.{block}.self_attn", self.config
        n, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        return {
            "q": linear_in_head_slices(params, f"{a}.q_proj", n),
            "k": linear_in_head_slices(params, f"{a}.k_proj", n_kv),
            "v": linear_in_head_slices(params, f"{a}.v_proj", n_kv),
            "o": linear_out_head_slices(params, f"{a}.o_proj", n),
        }

    def _block_groups(self, params, p):
        a, m = f"{p}.self_attn", f"{p}.mlp"
        return {
            "attn.q": _whole(params, f"{a}.q_proj"),
            "attn.k": _whole(params, f"{a}.k_proj"),
            "attn.v": _whole(params, f"{a}.v_proj"),
            "attn.o": _whole(params, f"{a}.o_proj"),
            "mlp.in": _whole(params, f"{m}.gate_proj", f"{m}.up_proj"),
            "mlp.out": _whole(params, f"{m}.down_proj"),
            "ln1": _whole(params, f"{p}.input_layernorm"),
            "ln2": _whole(params, f"{p}.post_attention_layernorm"),
        }


class GPTNeoXAdapter(HFAdapter):
    """GPT-NeoX (Black et al., 2022): pre-norm, partial rotary positions, (optionally) parallel residual,
    fused ``query_key_value`` whose rows interleave heads: ``[3D, D]`` is ``[n_head, 3, d_head, D]``."""

    families = {"GPT-NeoX": ((GPTNeoXForCausalLM,), (GPTNeoXModel,))}
    base_attr, blocks_attr, embed_attr, final_norm_attr = "gpt_neox", "layers", "embed_in", "final_layer_norm"
    upcasts_in_float64 = True
    attention_attr = "attention"

    def _heads_of(self, block):
        n = self.config.num_attention_heads
        q, k, v = interleaved_qkv_heads(block.attention.query_key_value.weight, n)
        return LayerHeads(q=q, k=k, v=v, o=linear_out_heads(block.attention.dense.weight, n))

    def _head_param_slices(self, params, block):
        a, n = f"{self._prefix}{self.blocks_attr}.{block}.attention", self.config.num_attention_heads
        return {
            **{kind: interleaved_qkv_head_slices(params, f"{a}.query_key_value", n, part)
               for part, kind in enumerate("qkv")},
            "o": linear_out_head_slices(params, f"{a}.dense", n),
        }

    def _block_groups(self, params, p):
        n_head = self.config.num_attention_heads
        D = self.d_model
        d_head = D // n_head
        w, b = f"{p}.attention.query_key_value.weight", f"{p}.attention.query_key_value.bias"
        qkv = {}
        for i, part in enumerate("qkv"):
            sel = (slice(None), i)
            qkv[f"attn.{part}"] = [ParamSlice(w, sel, (n_head, 3, d_head, D))] + (
                [ParamSlice(b, sel, (n_head, 3, d_head))] if b in params else []
            )
        return {
            **qkv,
            "attn.o": _whole(params, f"{p}.attention.dense"),
            "mlp.in": _whole(params, f"{p}.mlp.dense_h_to_4h"),
            "mlp.out": _whole(params, f"{p}.mlp.dense_4h_to_h"),
            "ln1": _whole(params, f"{p}.input_layernorm"),
            "ln2": _whole(params, f"{p}.post_attention_layernorm"),
        }


class BertAdapter(HFAdapter):
    """BERT (Devlin et al., 2019): post-norm encoder, masked LM (``causal=False`` unless ``is_decoder``).

    No final norm: ``"final"`` is the last block's output. ``embed`` holds word, position and
    token-type embeddings and the embeddings LayerNorm; ``head`` the MLM transform, its LayerNorm and
    the decoder bias (the decoder weight is tied to the word embeddings); the pooler is excluded,
    as the MLM loss does not use it. Source ``"embeddings"`` is the word embeddings, before positions,
    token types and the embeddings LayerNorm are applied (what the model takes as ``inputs_embeds``).
    """

    families = {"BERT": ((BertForMaskedLM,), (BertModel,))}
    base_attr, blocks_attr, embed_attr, final_norm_attr = (
        "bert",
        "encoder.layer",
        "embeddings.word_embeddings",
        None,
    )
    positions_attr = "max_position_embeddings"
    attention_attr = "attention.self"

    def _heads_of(self, block):
        a, n = block.attention, self.config.num_attention_heads
        return LayerHeads(
            q=linear_in_heads(a.self.query.weight, n),
            k=linear_in_heads(a.self.key.weight, n),
            v=linear_in_heads(a.self.value.weight, n),
            o=linear_out_heads(a.output.dense.weight, n),
        )

    @property
    def causal(self) -> bool:
        """Whether attention is causal: only for a BERT configured as a decoder (``is_decoder``)."""
        return bool(self.config.is_decoder)

    def _embed_paths(self) -> list[str]:
        e = "embeddings"
        return [
            f"{e}.word_embeddings",
            f"{e}.position_embeddings",
            f"{e}.token_type_embeddings",
            f"{e}.LayerNorm",
        ]

    def _head_param_slices(self, params, block):
        a, n = f"{self._prefix}{self.blocks_attr}.{block}.attention", self.config.num_attention_heads
        return {
            "q": linear_in_head_slices(params, f"{a}.self.query", n),
            "k": linear_in_head_slices(params, f"{a}.self.key", n),
            "v": linear_in_head_slices(params, f"{a}.self.value", n),
            "o": linear_out_head_slices(params, f"{a}.output.dense", n),
        }

    def _block_groups(self, params, p):
        a = f"{p}.attention"
        return {
            "attn.q": _whole(params, f"{a}.self.query"),
            "attn.k": _whole(params, f"{a}.self.key"),
            "attn.v": _whole(params, f"{a}.self.value"),
            "attn.o": _whole(params, f"{a}.output.dense"),
            "mlp.in": _whole(params, f"{p}.intermediate.dense"),
            "mlp.out": _whole(params, f"{p}.output.dense"),
            "ln1": _whole(params, f"{a}.output.LayerNorm"),
            "ln2": _whole(params, f"{p}.output.LayerNorm"),
        }

    def _head_groups(self, params):
        if not self.has_lm_head:
            return []
        h = "cls.predictions"
        return _whole(params, f"{h}.transform.dense", f"{h}.transform.LayerNorm", f"{h}.decoder") + [
            ParamSlice(n) for n in [f"{h}.bias"] if n in params
        ]


_ADAPTERS: tuple[type[HFAdapter], ...] = (GPT2Adapter, LlamaFamilyAdapter, GPTNeoXAdapter, BertAdapter)

SUPPORTED: tuple[str, ...] = tuple(
    f"{family} ({', '.join(c.__name__ for c in lm + base)})"
    for adapter in _ADAPTERS
    for family, (lm, base) in adapter.families.items()
)


def adapt_hf(model: nn.Module) -> HFAdapter | None:
    """The adapter for a supported Hugging Face model, or ``None`` (see ``SUPPORTED``)."""
    for adapter in _ADAPTERS:
        if isinstance(model, adapter.lm_classes() + adapter.base_classes()):
            return adapter(model)
    return None
