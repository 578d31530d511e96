"""save_svg / save_png of the three widgets: the current picture (the chart alone, no toolbar or caption) at
print size, written atomically; clear errors for a wrong suffix, a bad scale and nothing to draw yet."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
import torch
from PIL import Image

from tests.model_zoo import tiny
from tests.widgets.test_spectrum_widget import make_history
from tscope_widgets.figures.svg import svg_size
from tscope_widgets.widgets import SensitivityExplorer
from tscope_widgets.widgets.landscape import LandscapeWidget
from tscope_widgets.widgets.spectrum import SpectrumWidget

WAIT = 60.0


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 11, (8, 5), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def widgets(ids):
    explorer = SensitivityExplorer(tiny(), ids, batch_size=8, token_labels=list("<abab"), num_threads=1)
    landscape = LandscapeWidget(tiny(), ids, resolution=4, span=0.5, num_threads=1)
    spectrum = SpectrumWidget(history=make_history(3), throttle=0.05)
    assert explorer.wait(WAIT) and landscape.wait(WAIT)
    return {"explorer": explorer, "landscape": landscape, "spectrum": spectrum}


@pytest.mark.parametrize("name", ["explorer", "landscape", "spectrum"])
def test_save_svg_and_png_write_the_current_picture_at_print_size(widgets, name, tmp_path):
    w = widgets[name]
    picture = w._picture_svg()
    width, height = svg_size(picture)

    svg = w.save_svg(tmp_path / f"{name}.svg", scale=2).read_text()
    assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert svg_size(svg) == pytest.approx((2 * width, 2 * height), rel=1e-9)
    assert svg.endswith(picture.split(">", 1)[1])  # the same drawing, on a white background
    assert "tscope-toolbar" not in svg and "<button" not in svg

    path = w.save_png(tmp_path / f"{name}.png", scale=1.5)
    image = Image.open(io.BytesIO(path.read_bytes()))
    assert image.format == "PNG" and abs(image.size[0] - 1.5 * width) <= 1 and abs(image.size[1] - 1.5 * height) <= 1
    assert image.convert("RGB").getextrema() != ((255, 255), (255, 255), (255, 255))  # something is drawn


def test_figure_files_refuse_bad_requests(widgets, ids, tmp_path):
    w = widgets["explorer"]
    with pytest.raises(ValueError, match=r"ending in \.png"):
        w.save_png(tmp_path / "map.svg")
    with pytest.raises(ValueError, match=r"ending in \.svg"):
        w.save_svg(tmp_path / "map")
    with pytest.raises(ValueError, match="scale must be in"):
        w.save_svg(tmp_path / "map.svg", scale=0)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    fresh = SensitivityExplorer(tiny(), ids, start=False)
    with pytest.raises(ValueError, match="nothing to draw yet.*wait"):
        fresh.save_svg(tmp_path / "early.svg")
