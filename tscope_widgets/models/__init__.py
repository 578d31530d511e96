"""Models and adapters: one uniform view (:class:`ModelAdapter`) of any supported transformer."""

from .adapter import LayerDict, ModelAdapter, ParamSlice
from .registry import adapt
from .tiny import TinyAdapter, TinyConfig, TinyTransformer

__all__ = ["ModelAdapter", "ParamSlice", "LayerDict", "adapt", "TinyTransformer", "TinyConfig", "TinyAdapter"]
