"""``adapt(model)``: pick the adapter for a model."""

from __future__ import annotations

from torch import nn

from .adapter import ModelAdapter
from .tiny import TinyAdapter, TinyTransformer


def adapt(model: nn.Module | ModelAdapter) -> ModelAdapter:
    """The :class:`ModelAdapter` for ``model`` (an adapter is returned as is).

    Supported: :class:`TinyTransformer` and Hugging Face GPT-2, Llama-family (Llama, Qwen2,
    Mistral), GPT-NeoX and BERT models.

    Raises:
        TypeError: for an unsupported model, naming its class and the supported ones.
    """
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, TinyTransformer):
        return TinyAdapter(model)
    from . import hf  # imports transformers lazily

    adapter = hf.adapt_hf(model)
    if adapter is not None:
        return adapter
    raise TypeError(
        f"no adapter for {type(model).__name__}; supported: TinyTransformer, and Hugging Face "
        f"{', '.join(hf.SUPPORTED)} models"
    )
