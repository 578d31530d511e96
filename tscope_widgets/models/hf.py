"""Adapters for Hugging Face models (placeholder until the HF adapters land)."""

SUPPORTED: tuple[str, ...] = ()


def adapt_hf(model):
    return None
