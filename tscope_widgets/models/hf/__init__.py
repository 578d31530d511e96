"""Hugging Face transformers: adapters per architecture family, and the numerics of their analysis copies.

:mod:`.adapters` holds the :class:`HFAdapter` subclasses (GPT-2, Llama/Qwen2/Mistral, GPT-NeoX, BERT)
and :func:`adapt_hf`; :mod:`.numerics` the dtype-faithful attention, RMSNorm and rotary replacements and
the slope-saving GELU that analysis copies run on. Importing this package imports transformers and
registers the ``"tscope_eager"`` attention implementation.
"""

from .adapters import (
    SUPPORTED,
    BertAdapter,
    GPT2Adapter,
    GPTNeoXAdapter,
    HFAdapter,
    LlamaFamilyAdapter,
    adapt_hf,
)
from .numerics import (
    ATTN_IMPLEMENTATION,
    SlopeSavingGELU,
    dtype_faithful_eager_attention,
    gelu_slope,
    make_dtype_faithful,
    use_slope_saving_gelu,
)

__all__ = [
    # adapters
    "HFAdapter",
    "GPT2Adapter",
    "LlamaFamilyAdapter",
    "GPTNeoXAdapter",
    "BertAdapter",
    "adapt_hf",
    "SUPPORTED",
    # numerics of analysis copies
    "ATTN_IMPLEMENTATION",
    "dtype_faithful_eager_attention",
    "gelu_slope",
    "SlopeSavingGELU",
    "use_slope_saving_gelu",
    "make_dtype_faithful",
]
