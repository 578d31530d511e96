"""Head spectra: singular values against numpy.linalg.svd of the full matrices (circuits included),
effective-rank formulas on matrices with known spectra (entropy against scipy), one batched svdvals per kind."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.testing import assert_close

from tests.model_zoo import bert, gpt2, gpt_neox, llama, mistral, tiny
from tscope_widgets import HeadSpectra, head_spectra, head_weights
from tscope_widgets.kernels.attention import (
    KINDS,
    circuit_singular_values,
    condition_number,
    entropy_rank,
    participation_ratio,
    stable_rank,
)

BUILDERS = {"tiny": tiny, "gpt2": gpt2, "gpt_neox": gpt_neox, "llama": llama, "mistral": mistral, "bert": bert}


def _svd(m: torch.Tensor) -> np.ndarray:
    return np.linalg.svd(m.detach().numpy(), compute_uv=False)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_singular_values_match_numpy_svd_of_full_matrices(kind):
    model = BUILDERS[kind]()
    spectra = head_spectra(model)
    hw = head_weights(model)
    assert isinstance(spectra, HeadSpectra) and list(spectra) == list(hw) and len(spectra) == len(hw)
    for (lay, h), w in hw.items():
        D, dh = w.q.shape
        full = {
            "q": w.q,
            "k": w.k,
            "v": w.v,
            "o": w.o,
            "qk": w.q @ w.k.T / math.sqrt(dh),  # D x D, rank <= dh
            "ov": w.v @ w.o,  # D x D
        }
        got = spectra[(lay, h)]
        assert set(got) == set(KINDS)
        for k, m in full.items():
            want = _svd(m)  # descending, D values for the circuits
            r = got[k].shape[0]
            assert r == min(D, dh)
            np.testing.assert_allclose(got[k].numpy(), want[:r], rtol=1e-11, atol=1e-14 * want[0])
            assert (want[r:] <= 1e-12 * want[0]).all()  # the circuits' other singular values are zero
            assert (got[k][:-1] >= got[k][1:]).all()
    # grids by name: [n_layers, n_heads]
    n = len(hw) // len(spectra.layers)
    for measure in ("participation_ratio", "entropy_rank", "stable_rank", "condition_number"):
        grid = getattr(spectra, measure)
        assert set(grid) == set(KINDS) and all(v.shape == (len(spectra.layers), n) for v in grid.values())


def test_circuit_core_on_rank_deficient_factors():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 12, 4, dtype=torch.float64, generator=g)
    b = torch.randn(5, 12, 4, dtype=torch.float64, generator=g)
    b[1, :, 3] = b[1, :, 0]  # rank 3 factor: the core has a zero singular value
    got = circuit_singular_values(a, b)
    for i in range(5):
        want = _svd(a[i] @ b[i].T)
        np.testing.assert_allclose(got[i].numpy(), want[:4], rtol=1e-11, atol=1e-13 * want[0])
    assert got[1, 3] < 1e-12 * got[1, 0]


def _with_spectrum(sigma, rows, cols, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, dtype=torch.float64, generator=g))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, dtype=torch.float64, generator=g))
    s = torch.zeros(rows, cols, dtype=torch.float64)
    s[range(len(sigma)), range(len(sigma))] = torch.tensor(sigma, dtype=torch.float64)
    return u @ s @ v.T


KNOWN = [[3.0, 2.0, 1.0, 0.5], [2.0, 2.0, 2.0, 2.0], [5.0, 0.0, 0.0, 0.0], [1.0, 1e-3, 1e-3, 0.0]]


@pytest.mark.parametrize("sigma", KNOWN)
def test_effective_ranks_on_known_spectra(sigma):
    m = _with_spectrum(sigma, 7, 4)
    s = torch.linalg.svdvals(m)
    sig = np.array(sigma)
    assert_close(s, torch.tensor(sig), atol=1e-13, rtol=0)
    assert_close(participation_ratio(s), torch.tensor(sig.sum() ** 2 / (sig**2).sum()), rtol=1e-12, atol=0)
    # Roy & Vetterli: exp of the Shannon entropy (nats) of sigma / sum(sigma); scipy normalises itself
    want = torch.tensor(math.exp(scipy.stats.entropy(sig)), dtype=torch.float64)
    assert_close(entropy_rank(s), want, rtol=1e-12, atol=0)
    assert_close(stable_rank(s), torch.tensor((sig**2).sum() / sig.max() ** 2), rtol=1e-12, atol=0)
    floor = sig.max() * 7 * np.finfo(np.float64).eps
    want = torch.tensor(sig.max() / max(s[-1].item(), floor), dtype=torch.float64)
    assert_close(condition_number(s, 7), want, rtol=1e-12, atol=0)


def test_effective_ranks_closed_forms_and_edge_cases():
    s = torch.tensor([[2.0, 2.0, 2.0, 2.0], [4.0, 0.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.5]], dtype=torch.float64)
    assert_close(participation_ratio(s)[:2], torch.tensor([4.0, 1.0], dtype=torch.float64))
    assert_close(entropy_rank(s)[:2], torch.tensor([4.0, 1.0], dtype=torch.float64))
    assert_close(stable_rank(s)[:2], torch.tensor([4.0, 1.0], dtype=torch.float64))
    assert_close(participation_ratio(s)[2], torch.tensor(6.5**2 / 14.25, dtype=torch.float64))
    assert_close(stable_rank(s)[2], torch.tensor(14.25 / 9, dtype=torch.float64))
    cond = condition_number(s)
    assert cond[0] == 1.0 and cond[2] == 6.0
    assert cond[1] == 1.0 / (4 * torch.finfo(torch.float64).eps)  # singular: the documented floor
    zero = torch.zeros(2, 3, dtype=torch.float64)
    for f in (participation_ratio, entropy_rank, stable_rank, condition_number):
        assert torch.isnan(f(zero)).all()
    with pytest.raises(ValueError, match="singular values must be a floating tensor"):
        stable_rank(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="r >= 1"):
        entropy_rank(torch.zeros(3, 0))


def test_head_spectra_of_a_planted_head_and_batched_svd(monkeypatch):
    model = tiny(d_model=8, n_head=2)
    dh = 4
    q = _with_spectrum([4.0, 2.0, 1.0, 1.0], 8, 4, seed=1)
    k = _with_spectrum([1.0, 1.0, 1.0, 1.0], 8, 4, seed=2)
    with torch.no_grad():
        w = head_weights(model)[(1, 1)]
        w.q.copy_(q)  # writes through the views into the model
        w.k.copy_(k)
    calls = []
    svdvals = torch.linalg.svdvals
    monkeypatch.setattr(torch.linalg, "svdvals", lambda x: calls.append(tuple(x.shape)) or svdvals(x))
    spectra = head_spectra(model)
    assert len(calls) == 6 and all(c[0] == 4 for c in calls)  # one call per kind over 2 layers x 2 heads
    assert_close(spectra[(1, 1)]["q"], torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    assert_close(spectra[(1, 1)]["k"], torch.ones(4, dtype=torch.float64))
    r = spectra.ranks(1, 1)
    assert r["stable_rank"]["q"] == pytest.approx(22 / 16, rel=1e-12)
    assert r["participation_ratio"]["k"] == pytest.approx(4.0, rel=1e-12)
    assert r["condition_number"]["q"] == pytest.approx(4.0, rel=1e-12)
    assert spectra.participation_ratio["q"][1, 1] == pytest.approx(64 / 22, rel=1e-12)
    np.testing.assert_allclose(spectra[(1, 1)]["qk"].numpy(), _svd(q @ k.T / math.sqrt(dh))[:4], rtol=1e-12)


def test_head_spectra_errors_and_options():
    model = gpt2()
    s = head_spectra(model, layers=[-1])
    assert s.layers == [1] and list(s) == [(1, 0), (1, 1)]
    with pytest.raises(KeyError, match=r"layer in \[1\]"):
        s[(0, 0)]
    with pytest.raises(KeyError, match=r"head must be an int in \[0, 2\)"):
        s[(1, 2)]
    s32 = head_spectra(model, dtype=torch.float32)
    assert s32.singular_values["qk"].dtype == torch.float32
    assert_close(s32.singular_values["qk"].double(), head_spectra(model).singular_values["qk"], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="floating torch.dtype"):
        head_spectra(model, dtype=torch.int64)
    with pytest.raises(ValueError, match="out of range"):
        head_spectra(model, layers=[5])
