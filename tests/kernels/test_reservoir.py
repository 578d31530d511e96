"""SampleReservoir.grown: a copy on a longer grid, equal to the padding the distributed merge did before."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tscope_widgets.kernels.reservoir import SampleReservoir


def _old_grow(reservoir: SampleReservoir, seq_len: int) -> SampleReservoir:
    """The padding distributed.py did before SampleReservoir.grown (through the state_dict keys)."""
    sd = reservoir.state_dict()
    pad = seq_len - reservoir.seq_len
    if pad:
        sd["input_ids"] = F.pad(sd["input_ids"], (0, pad), value=0)
        sd["mask"] = F.pad(sd["mask"], (0, pad), value=False)
        sd["seq_len"] = torch.tensor(seq_len, dtype=torch.long)
        for layer in reservoir.layers:
            sd[f"maps.{layer}"] = F.pad(sd[f"maps.{layer}"], (0, pad, 0, pad), value=float("nan"))
    out = SampleReservoir(reservoir.capacity, seq_len, reservoir.layers, seed=0)
    out.load_state_dict(sd)
    return out


def _filled(capacity: int = 3, seq_len: int = 4, samples: int = 7) -> SampleReservoir:
    g = torch.Generator().manual_seed(0)
    r = SampleReservoir(capacity, seq_len, [0, "final"], seed=5)
    ids = torch.randint(1, 50, (samples, seq_len), generator=g)
    mask = torch.rand(samples, seq_len, generator=g) < 0.8
    maps = {layer: torch.rand(samples, seq_len, seq_len, generator=g, dtype=torch.float64) for layer in r.layers}
    r.add(ids, mask, maps)
    return r


def _assert_same(a: SampleReservoir, b: SampleReservoir) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k].nan_to_num(-7.0), sb[k].nan_to_num(-7.0)), k
        assert torch.equal(sa[k].isnan(), sb[k].isnan()) if sa[k].is_floating_point() else True, k


@pytest.mark.parametrize("capacity, samples", [(3, 7), (5, 2), (0, 4)])
@pytest.mark.parametrize("seq_len", [4, 6])
def test_grown_equals_the_old_padding(capacity, samples, seq_len):
    r = _filled(capacity, 4, samples)
    before = r.state_dict()
    grown = r.grown(seq_len)
    _assert_same(grown, _old_grow(r, seq_len))
    assert grown is not r and grown.seq_len == seq_len and grown.seen == r.seen and grown.layers == r.layers
    assert torch.equal(grown.sample_index, r.sample_index)
    assert torch.equal(grown.input_ids[:, :4], r.input_ids) and not bool(grown.mask[:, 4:].any())
    assert bool(grown.maps[0][:, 4:, :].isnan().all()) and bool(grown.maps["final"][:, :, 4:].isnan().all())
    assert all(torch.equal(before[k].nan_to_num(-7.0), v.nan_to_num(-7.0)) for k, v in r.state_dict().items())
    # The generator state travels: both draw the same acceptance slots from here on.
    assert torch.equal(grown.generator.get_state(), r.generator.get_state())


def test_grown_rejects_a_shorter_length():
    with pytest.raises(ValueError, match="seq_len must be an int >= 4"):
        _filled().grown(3)
    with pytest.raises(ValueError, match="seq_len must be an int"):
        _filled().grown(True)
