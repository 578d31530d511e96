"""``python -m tscope_widgets.cli`` (and ``torchrun ... -m tscope_widgets.cli``): the ``tscope`` command."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
