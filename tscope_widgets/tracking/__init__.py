"""Observers of a training loop: the Hessian spectrum and the attention geometry, recorded every few steps.

- :mod:`.spectrum`: :class:`SpectrumTracker` and :class:`SpectrumHistory` (λ_max, λ_min, trace, gradient
  norms, block sharpness, densities, the edge-of-stability threshold);
- :mod:`.attention`: :class:`AttentionTracker` and :class:`AttentionHistory` (per-head singular values,
  effective ranks, condition numbers and attention entropy on a probe batch).

Both read the model and never change the training; both work in a plain loop or as Hugging Face
``Trainer`` callbacks.
"""

from .attention import AttentionHistory, AttentionTracker
from .spectrum import SpectrumHistory, SpectrumTracker, layer_of_group, sgd_stability_threshold

__all__ = [
    "SpectrumHistory",
    "SpectrumTracker",
    "sgd_stability_threshold",
    "layer_of_group",
    "AttentionHistory",
    "AttentionTracker",
]
