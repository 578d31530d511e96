"""Compatibility: the landscape picture's rules moved to :mod:`tscope_widgets.figures` (the command line imports
them from here until it uses the figures package; remove this module then)."""

from ..figures.charts import contour_levels, nice_ticks
from ..figures.landscape import contour_lines

__all__ = ["contour_levels", "contour_lines", "nice_ticks"]
