"""tscope_widgets: look inside transformers through their derivatives."""

from .models import ModelAdapter, TinyConfig, TinyTransformer, adapt

__all__ = ["ModelAdapter", "TinyConfig", "TinyTransformer", "adapt"]
__version__ = "0.1.0"
