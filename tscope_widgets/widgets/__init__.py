"""anywidget front ends: traits in, traits out; the maths lives in ``kernels``.

Importing this package needs the bundled JavaScript (``tscope_widgets/static/*.js``), which
``npm --prefix js run build`` writes and a wheel ships.
"""

from .attention import AttentionExplorer
from .block_spectra import BlockSpectraWidget
from .comparison import ComparisonExplorer
from .landscape import LandscapeWidget
from .sensitivity import STATISTICS, VIEWS, SensitivityExplorer
from .spectrum import SpectrumWidget
from .sweep import SweepWidget

__all__ = [
    "AttentionExplorer",
    "BlockSpectraWidget",
    "ComparisonExplorer",
    "SensitivityExplorer",
    "SpectrumWidget",
    "LandscapeWidget",
    "SweepWidget",
    "STATISTICS",
    "VIEWS",
]
