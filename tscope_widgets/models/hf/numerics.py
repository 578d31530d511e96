"""The numerics of Hugging Face modules on analysis copies: dtype-faithful attention, norms and rotary, and GELU.

Analysis copies (``adapter.analysis(dtype)``) run in the requested dtype for real. transformers 5
upcasts a few operations to float32 whatever the model dtype, which caps a float64 model at float32
precision (finite differences and Hessian symmetry then fail at ~1e-7):

- Llama-family ``RMSNorm.forward`` casts its input to float32;
- the rotary embeddings (Llama family, GPT-NeoX) compute angles, cosines and sines in float32;
- ``eager_attention_forward`` (Llama family, GPT-NeoX) takes the softmax with ``dtype=torch.float32``;
  GPT-2's ``reorder_and_upcast_attn`` computes scores in float32.

On the copy only, those modules are switched to subclasses that compute in the input dtype (at least
float32, so bf16/fp16 copies keep transformers' upcasts), and attention runs through
:func:`dtype_faithful_eager_attention`, registered in transformers' ``AttentionInterface`` (and its
mask in ``AttentionMaskInterface``) under the private name ``"tscope_eager"``.

GELU activations (GPT-2's ``NewGELUActivation``, ``AccurateGELUActivation``, ``GELUTanh``,
``GELUActivation`` and their ``*_python`` variants) are switched on the copy to
:class:`SlopeSavingGELU`: the same function, computed by ``F.gelu``, whose backward multiplies by the
derivative evaluated once from the saved input. A vmapped backward (one VJP per cotangent) through
GPT-2's Python formula runs a pow/tanh/mul graph per cotangent, and through ``F.gelu`` one
``gelu_backward`` (tanh or erf) per cotangent; here each cotangent costs one multiply (measured on a
CPU: 4-5x faster than ``gelu_backward``; a GPT-2 sensitivity pass ran ~2x faster than through the
Python formula). Values agree to rounding (~1e-16 in float64).
``FastGELUActivation`` (rounded constant) and ``QuickGELUActivation`` are other functions and stay.

The user's model keeps its classes, its config and its attention implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface, AttentionMaskInterface, PretrainedConfig
from transformers.activations import AccurateGELUActivation, GELUActivation, GELUTanh, NewGELUActivation
from transformers.masking_utils import eager_mask
from transformers.modeling_rope_utils import dynamic_rope_update
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding
from transformers.models.mistral.modeling_mistral import MistralRMSNorm, MistralRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, Qwen2RotaryEmbedding

ATTN_IMPLEMENTATION = "tscope_eager"


# ----- dtype-faithful replacements (used on analysis copies only) -------------------------------
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in: ``dtype`` itself, but at least float32 (as transformers does)."""
    return torch.promote_types(dtype, torch.float32)


def dtype_faithful_eager_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    r"""Explicit softmax attention whose softmax runs in the inputs' dtype (at least float32).

    .. math:: \operatorname{softmax}\big(Q K^\top \cdot \text{scaling} + M\big)\, V

    Same signature and result as transformers' ``eager_attention_forward`` (Vaswani et al., 2017),
    except that the softmax is not forced to float32, so a float64 model stays float64. Grouped-query
    attention (Ainslie et al., 2023) repeats each key/value head ``n_head / n_kv_head`` times.

    Args:
        module: The attention module (its ``training`` flag gates dropout; GPT-2's
            ``reorder_and_upcast_attn`` makes the scores be computed in at least float32 too).
        query: ``[B, n_head, S, d_head]``.
        key: ``[B, n_kv_head, S_k, d_head]``.
        value: ``[B, n_kv_head, S_k, d_head]``.
        attention_mask: Additive float mask ``[B, 1, S, S_k]`` (0 = attend, dtype minimum = masked),
            or ``None``.
        scaling: Score scale, ``d_head ** -0.5`` when ``None``.
        dropout: Dropout probability on the attention weights (training only).
        **kwargs: Further arguments transformers passes to attention functions (ignored).

    Returns:
        ``(output [B, S, n_head, d_head], weights [B, n_head, S, S_k])``.
    """
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)  # [B, n_head, S_k, d_head]
        value = value.repeat_interleave(n_rep, dim=1)  # [B, n_head, S_k, d_head]
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    ct = _compute_dtype(query.dtype)
    if getattr(module, "reorder_and_upcast_attn", False):
        query, key = query.to(ct), key.to(ct)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # [B, n_head, S, S_k]
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    weights = F.softmax(scores, dim=-1, dtype=ct).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # [B, S, n_head, d_head]
    return output, weights


AttentionInterface.register(ATTN_IMPLEMENTATION, dtype_faithful_eager_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


def _rms_norm_forward(self, hidden_states: Tensor) -> Tensor:
    r"""RMSNorm (Zhang & Sennrich, 2019), ``w * x / sqrt(mean(x^2) + eps)``, in the input dtype (>= fp32)."""
    x = hidden_states.to(_compute_dtype(hidden_states.dtype))
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * x.to(hidden_states.dtype)


@torch.no_grad()
@dynamic_rope_update
def _rotary_forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Rotary cos/sin ``[B, S, rotary_dim]`` (Su et al., 2021), computed in ``x``'s dtype (>= float32).

    The inverse frequencies are the module's ``inv_freq`` buffer, as in transformers.
    """
    ct = _compute_dtype(x.dtype)
    freqs = position_ids[..., None].to(ct) * self.inv_freq.to(
        device=x.device, dtype=ct
    )  # [B, S, rotary_dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [B, S, rotary_dim]
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


def gelu_slope(x: Tensor, approximate: str) -> Tensor:
    r"""The derivative :math:`g'(x)` of GELU (Hendrycks & Gimpel, 2016), elementwise.

    Exact (``"none"``): :math:`g = x\Phi(x)`, :math:`g' = \Phi(x) + x\varphi(x)`. Tanh approximation
    (``"tanh"``): :math:`g = \tfrac12 x (1 + t)`, :math:`t = \tanh(\sqrt{2/\pi}(x + 0.044715 x^3))`,
    :math:`g' = \tfrac12 (1 + t) + \tfrac12 x (1 - t^2) \sqrt{2/\pi} (1 + 3 \cdot 0.044715 x^2)`.
    Written in differentiable torch ops, so its own derivatives (Hessians, forward-over-reverse) follow.
    """
    if approximate == "tanh":
        x2 = x * x
        t = torch.tanh(_SQRT_2_OVER_PI * x * (1 + _GELU_CUBIC * x2))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (_SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x2))
    return 0.5 * (1 + torch.erf(x * _INV_SQRT_2)) + x * torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


class SlopeSavingGELU(torch.autograd.Function):
    """``F.gelu(x, approximate)`` whose derivatives multiply by :func:`gelu_slope` of the saved input.

    Same values as ``F.gelu``. The point is batched differentiation: a vmapped backward (one VJP per
    cotangent, as in Jacobian sensitivity) through ``F.gelu`` re-evaluates the tanh/erf derivative
    for every cotangent (``gelu_backward`` on ``[n, B, S, 4D]``), while here the slope depends on the
    unbatched input only, so it is computed once per backward and each cotangent costs one multiply.
    Backward and JVP are differentiable (double backward, forward-over-reverse) and vmap rules are
    generated by torch.func.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, approximate: str) -> Tensor:
        """``F.gelu(x, approximate=approximate)``, elementwise, in ``x``'s shape and dtype."""
        return F.gelu(x, approximate=approximate)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        """Save the input ``x`` (for backward and forward mode) and the ``approximate`` mode."""
        x, approximate = inputs
        ctx.approximate = approximate
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        """VJP: ``grad * gelu_slope(x)``; no gradient for ``approximate``."""
        (x,) = ctx.saved_tensors
        return grad * gelu_slope(x, ctx.approximate), None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, _) -> Tensor:
        """JVP: ``x_tangent * gelu_slope(x)``."""
        (x,) = ctx.saved_tensors
        return x_tangent * gelu_slope(x, ctx.approximate)


def _gelu_tanh_forward(self, input: Tensor) -> Tensor:
    r"""Tanh-approximated GELU (Hendrycks & Gimpel, 2016) through :class:`SlopeSavingGELU`:
    :math:`\tfrac12 x (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`."""
    return SlopeSavingGELU.apply(input, "tanh")


def _gelu_erf_forward(self, input: Tensor) -> Tensor:
    r"""Exact GELU (Hendrycks & Gimpel, 2016) through :class:`SlopeSavingGELU`:
    :math:`x \Phi(x) = \tfrac12 x (1 + \mathrm{erf}(x/\sqrt2))`."""
    return SlopeSavingGELU.apply(input, "none")


# transformers activation class -> the same function through SlopeSavingGELU. Only exact equivalents:
# FastGELUActivation rounds sqrt(2/pi) to 0.7978845608 and QuickGELUActivation is x*sigmoid(1.702x).
_GELU_FORWARDS: dict[type, Callable] = {
    NewGELUActivation: _gelu_tanh_forward,
    AccurateGELUActivation: _gelu_tanh_forward,
    GELUTanh: _gelu_tanh_forward,
    GELUActivation: _gelu_erf_forward,
}

# transformers class -> forward that computes in the input dtype. The RMSNorm classes share one formula.
_FAITHFUL_FORWARDS: dict[type, Callable] = {
    LlamaRMSNorm: _rms_norm_forward,
    Qwen2RMSNorm: _rms_norm_forward,
    MistralRMSNorm: _rms_norm_forward,
    LlamaRotaryEmbedding: _rotary_forward,
    Qwen2RotaryEmbedding: _rotary_forward,
    MistralRotaryEmbedding: _rotary_forward,
    GPTNeoXRotaryEmbedding: _rotary_forward,
}
_replacement_classes: dict[tuple[type, str], type] = {}


def _replacement_class(cls: type, forward: Callable, suffix: str) -> type:
    """The subclass ``{cls.__name__}{suffix}`` of ``cls`` whose ``forward`` is ``forward`` (made once)."""
    key = (cls, suffix)
    if key not in _replacement_classes:
        _replacement_classes[key] = type(
            f"{cls.__name__}{suffix}", (cls,), {"forward": forward, "__module__": __name__}
        )
    return _replacement_classes[key]


def use_slope_saving_gelu(model: nn.Module) -> None:
    """Switch the GELU modules of ``model`` to :class:`SlopeSavingGELU` (the same function), in place.

    Call it on a private copy only.
    """
    for module in model.modules():
        if type(module) in _GELU_FORWARDS:
            module.__class__ = _replacement_class(type(module), _GELU_FORWARDS[type(module)], "SlopeSaving")


def make_dtype_faithful(model: nn.Module) -> None:
    """Make ``model`` compute in its own dtype: eager attention, norms and rotary without float32 upcasts.

    Modifies ``model`` in place (module classes and config), so call it on a private copy only.
    """
    for module in model.modules():
        if type(module) in _FAITHFUL_FORWARDS:
            module.__class__ = _replacement_class(
                type(module), _FAITHFUL_FORWARDS[type(module)], "InAnalysisDtype"
            )
    # Every config reachable from the modules (the top-level one, shared by the base model, and any
    # sub-config) selects the attention function by name at each forward.
    configs = {
        id(c): c for m in model.modules() if isinstance(c := getattr(m, "config", None), PretrainedConfig)
    }
    for config in configs.values():
        config._attn_implementation = ATTN_IMPLEMENTATION

