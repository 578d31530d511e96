"""Browser writes to traits the front end does not own are refused: the widget's own Python-side traits,
the traits inherited from ipywidgets and anywidget, and unknown names (finding "Also" of the reliability issue)."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.model_zoo import tiny
from tests.widgets.comm import Wire, browser_update
from tests.widgets.test_spectrum_widget import make_history
from tscope_widgets.widgets import SensitivityExplorer, SpectrumWidget

HOSTILE = {
    "_esm": "export default { render() { alert(1) } }",
    "_css": "body { display: none }",
    "_dom_classes": ["injected"],
    "tooltip": "injected",
    "tabbable": True,
    "_model_name": "OtherModel",
    "_view_module": "evil",
    "layout": "IPY_MODEL_0",
    "no_such_trait": 1,
}


def _explorer():
    model = tiny()
    ids = torch.randint(0, model.config.vocab_size, (4, 6), generator=torch.Generator().manual_seed(0))
    w = SensitivityExplorer(model, ids, batch_size=4)
    assert w.wait(60)
    return w


def _blocks():
    from tests.widgets.test_static import _fixed_blocks

    return _fixed_blocks()


@pytest.mark.parametrize("make", [_explorer, lambda: SpectrumWidget(history=make_history(3), throttle=0.05), _blocks],
                         ids=["explorer", "spectrum", "blocks"])
def test_writes_to_inherited_and_unknown_traits_are_refused(make, caplog):
    w = make()
    wire = Wire(w)
    before = {name: getattr(w, name) for name in HOSTILE if w.has_trait(name)}
    assert {"_esm", "_dom_classes", "tooltip", "tabbable", "_model_name"} <= set(before)
    with caplog.at_level(logging.WARNING):
        browser_update(w, **HOSTILE)
    assert {name: getattr(w, name) for name in before} == before
    assert not hasattr(w, "no_such_trait")
    message = next(r.getMessage() for r in caplog.records if "read-only traits" in r.getMessage())
    assert all(repr(name) in message for name in HOSTILE)
    # the page is sent back the values it must show for the real traits it tried to change
    sent = wire.updates("tooltip")
    assert sent and sent[-1] == before["tooltip"]
    w.close()
