"""Fixtures of the widget tests."""

import pytest
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def kernel_shell(monkeypatch):
    """An IPython shell that looks like a Jupyter kernel's (widgets then keep their display ids)."""
    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    return shell
