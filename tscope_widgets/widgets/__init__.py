"""anywidget front ends: traits in, traits out; the maths lives in ``kernels``.

Importing this package needs the bundled JavaScript (``tscope_widgets/static/*.js``), which
``npm --prefix js run build`` writes and a wheel ships.
"""

from .block_spectra import BlockSpectraWidget
from .landscape import LandscapeWidget
from .sensitivity import STATISTICS, VIEWS, SensitivityExplorer
from .spectrum import SpectrumWidget

__all__ = ["SensitivityExplorer", "SpectrumWidget", "LandscapeWidget", "BlockSpectraWidget", "STATISTICS", "VIEWS"]
