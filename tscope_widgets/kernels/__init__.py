"""Pure torch math over tensors and adapters: no widgets, no threads, no I/O."""

from .reservoir import SampleReservoir
from .sensitivity import SensitivitySnapshot, iter_sensitivity, position_sensitivity
from .welford import WelfordState

__all__ = [
    # streaming statistics
    "WelfordState",
    "SampleReservoir",
    # position-to-position sensitivity
    "position_sensitivity",
    "iter_sensitivity",
    "SensitivitySnapshot",
]
