"""iter_sensitivity (streamed per-cell statistics, resume) and SampleReservoir."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.model_zoo import random_batch, tiny
from tscope_widgets.jobs import Checkpoint, load_checkpoint, save_checkpoint
from tscope_widgets.kernels.reservoir import SampleReservoir
from tscope_widgets.kernels.sensitivity import iter_sensitivity, position_sensitivity
from tscope_widgets.models import adapt

LAYERS = [0, "final"]


@pytest.fixture(scope="module")
def model():
    return tiny()


def padded_maps(model, batches, seq_len, **kwargs) -> dict:
    """Per-sample maps of every batch, NaN-padded to ``[N, seq_len, seq_len]`` float64."""
    out = {lay: [] for lay in LAYERS}
    for ids, mask in batches:
        maps = position_sensitivity(model, ids, mask, layers=LAYERS, **kwargs)
        pad = seq_len - ids.shape[1]
        for lay in LAYERS:
            out[lay].append(torch.nn.functional.pad(maps[lay], (0, pad, 0, pad), value=float("nan")))
    return {lay: torch.cat(v) for lay, v in out.items()}


def assert_stats_match_numpy(stats, maps: dict) -> None:
    for lay, x in maps.items():
        a = x.numpy()
        count = np.isfinite(a).sum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
            mean, std = np.nanmean(a, 0), np.nanstd(a, 0, ddof=1)
            lo, hi = np.nanmin(a, 0), np.nanmax(a, 0)
        st = stats[lay]
        assert st.shape == a.shape[1:] and st.dtype == torch.float64 and st.device.type == "cpu"
        np.testing.assert_array_equal(st.count.numpy(), count)
        np.testing.assert_allclose(st.mean.numpy(), mean, rtol=1e-12, atol=0, equal_nan=True)
        np.testing.assert_allclose(st.min.numpy(), lo, rtol=0, atol=0, equal_nan=True)
        np.testing.assert_allclose(st.max.numpy(), hi, rtol=0, atol=0, equal_nan=True)
        std = np.where(count >= 2, std, np.nan)
        np.testing.assert_allclose(st.std.numpy(), std, rtol=1e-9, atol=1e-14, equal_nan=True)


def assert_reservoir_holds_samples(reservoir, maps: dict, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Every kept sample's ids, mask and maps are those of its data set row."""
    keep = reservoir.sample_index[: reservoir.size]
    assert reservoir.size == min(reservoir.capacity, reservoir.seen)
    assert (reservoir.sample_index[reservoir.size :] == -1).all()
    assert len(set(keep.tolist())) == len(keep) and (keep >= 0).all() and (keep < reservoir.seen).all()
    for slot, row in enumerate(keep.tolist()):
        S_b = ids.shape[1]
        assert torch.equal(reservoir.input_ids[slot, :S_b], ids[row])
        assert torch.equal(reservoir.mask[slot, :S_b], mask[row].bool())
        for lay in LAYERS:
            torch.testing.assert_close(
                reservoir.maps[lay][slot], maps[lay][row].float(), equal_nan=True, rtol=0, atol=0
            )


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical values, NaN included."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    return torch.equal(a, b)


# ----- statistics ---------------------------------------------------------------------------------------
def test_tensor_data_stats_equal_numpy_and_reservoir_keeps_maps(model):
    batch = random_batch(adapt(model), 7, 5, seed=1)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    snaps = list(iter_sensitivity(model, (ids, mask), layers=LAYERS, batch_size=3, reservoir_size=4))
    assert [s.done for s in snaps] == [3, 6, 7] and [s.batches for s in snaps] == [1, 2, 3]
    last = snaps[-1]
    assert (last.total, last.seq_len, last.method, last.mode, last.layers) == (
        7,
        5,
        "exact",
        "reverse",  # choose_mode: reverse (depths 1 + 2) * H / 2 < forward 2 * D * 2
        LAYERS,
    )
    maps = padded_maps(model, [(ids[a : a + 3], mask[a : a + 3]) for a in range(0, 7, 3)], 5)
    assert_stats_match_numpy(last.stats, maps)
    assert_stats_match_numpy(snaps[0].stats, {lay: m[:3] for lay, m in maps.items()})  # snapshots are frozen
    assert_reservoir_holds_samples(last.reservoir, maps, ids, mask)
    assert last.reservoir.size == 4 and snaps[0].reservoir.size == 3
    # Causal zeros stay zeros in the statistics; padding makes counts differ per cell.
    assert (last.stats[0].max[torch.ones(5, 5, dtype=torch.bool).triu(1)].nan_to_num() == 0).all()
    assert last.stats[0].count.unique().numel() > 1


def test_dict_data_with_truncation_and_hutchinson(model):
    ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(2))
    snaps = list(
        iter_sensitivity(
            model,
            {"input_ids": ids},
            layers=LAYERS,
            batch_size=4,
            max_seq_len=4,
            method="hutchinson",
            probes=3,
            seed=5,
        )
    )
    last = snaps[-1]
    assert (last.seq_len, last.method, last.probes, last.done) == (4, "hutchinson", 3, 4)
    gen = torch.Generator().manual_seed(5)
    maps = padded_maps(
        model, [(ids[:, :4], None)], 4, method="hutchinson", probes=3, generator=gen, mode=last.mode
    )
    assert last.mode == "reverse"
    assert_stats_match_numpy(last.stats, maps)


def tiny_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def test_strings_with_tokenizer(model):
    texts = ["the cat sat on the mat", "a dog ran", "the dog", "a cat ran far", "dog"]
    tokenizer = tiny_tokenizer()
    snaps = list(
        iter_sensitivity(model, texts, tokenizer=tokenizer, layers=LAYERS, batch_size=2, max_seq_len=5)
    )
    last = snaps[-1]
    assert (last.total, last.done, last.batches, last.seq_len) == (5, 5, 3, 5)
    batches = []
    for a in range(0, 5, 2):
        enc = tokenizer(
            texts[a : a + 2], padding="longest", truncation=True, max_length=5, return_tensors="pt"
        )
        batches.append((enc["input_ids"], enc["attention_mask"]))
    assert batches[0][0].shape == (2, 5) and batches[2][0].shape == (1, 1)  # truncated / shortest batch
    maps = padded_maps(model, batches, 5)
    assert_stats_match_numpy(last.stats, maps)
    lengths = torch.tensor([5, 3, 2, 4, 1])  # after truncation to 5
    expected = (lengths[:, None, None] > torch.arange(5)[:, None]) & (
        lengths[:, None, None] > torch.arange(5)
    )
    assert torch.equal(last.stats[0].count, expected.sum(0).double())
    # Without max_seq_len the grid is the longest text.
    assert next(iter_sensitivity(model, texts, tokenizer=tokenizer, batch_size=2)).seq_len == 6


def test_dataloader_of_dicts_and_variable_length_batches(model):
    rows = random_batch(adapt(model), 5, 4, seed=3)
    dataset = [
        {"input_ids": rows["input_ids"][i], "attention_mask": rows["attention_mask"][i]} for i in range(5)
    ]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    snaps = list(iter_sensitivity(model, loader, layers=LAYERS, reservoir_size=10))
    assert [s.done for s in snaps] == [2, 4, 5] and snaps[-1].total == 5 and snaps[-1].seq_len == 4
    maps = padded_maps(model, [(b["input_ids"], b["attention_mask"]) for b in loader], 4)
    assert_stats_match_numpy(snaps[-1].stats, maps)
    assert_reservoir_holds_samples(snaps[-1].reservoir, maps, rows["input_ids"], rows["attention_mask"])

    # An iterable of batches of different lengths (dicts and bare id tensors), truncated to max_seq_len.
    g = torch.Generator().manual_seed(4)
    a, b, c = (torch.randint(1, 11, (2, n), generator=g) for n in (3, 7, 5))
    mixed = [
        {"input_ids": a},
        b,
        {"input_ids": c, "attention_mask": torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])},
    ]
    last = list(iter_sensitivity(model, mixed, layers=LAYERS, max_seq_len=6))[-1]
    assert last.total is None and last.seq_len == 6
    maps = padded_maps(model, [(a, None), (b[:, :6], None), (c, mixed[2]["attention_mask"])], 6)
    assert_stats_match_numpy(last.stats, maps)
    with pytest.raises(ValueError, match="pass max_seq_len"):
        list(iter_sensitivity(model, mixed, layers=LAYERS))


# ----- resume ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, as_batches", [("exact", False), ("hutchinson", True)])
def test_resume_is_bit_identical(model, tmp_path, method, as_batches):
    batch = random_batch(adapt(model), 9, 5, seed=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if as_batches:
        data = [{"input_ids": ids[a : a + 2], "attention_mask": mask[a : a + 2]} for a in range(0, 9, 2)]
    else:
        data = {"input_ids": ids, "attention_mask": mask}
    kw = dict(layers=LAYERS, method=method, probes=2, batch_size=2, reservoir_size=3, seed=11)
    uninterrupted = list(iter_sensitivity(model, data, **kw))[-1]

    run = iter_sensitivity(model, data, **kw)
    next(run)
    snap = next(run)  # 2 batches, reservoir already replacing
    save_checkpoint(tmp_path, snap)
    checkpoint = load_checkpoint(tmp_path)
    resumed = list(iter_sensitivity(model, data, resume=checkpoint, **kw))
    assert [s.done for s in resumed] == [6, 8, 9] and resumed[-1].batches == 5
    final = resumed[-1]
    want, got = uninterrupted.state_dict(), final.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert identical(want[key], got[key]), key
    assert final.meta() == uninterrupted.meta()
    # A finished run resumes to its final snapshot; other settings are refused.
    done = Checkpoint(tensors=final.state_dict(), meta=final.meta())
    assert [s.done for s in iter_sensitivity(model, data, resume=done, **kw)] == [9]
    with pytest.raises(ValueError, match="reservoir_size=3"):
        iter_sensitivity(model, data, resume=checkpoint, **{**kw, "reservoir_size": 4})
    with pytest.raises(ValueError, match="layers="):
        iter_sensitivity(model, data, resume=checkpoint, **{**kw, "layers": [1]})


# ----- errors ------------------------------------------------------------------------------------------
def test_bad_data_and_options(model):
    with pytest.raises(ValueError, match="empty"):
        iter_sensitivity(model, torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        iter_sensitivity(model, [])
    with pytest.raises(ValueError, match="yielded no batches"):
        list(iter_sensitivity(model, iter([])))
    with pytest.raises(TypeError, match="tokenizer"):
        iter_sensitivity(model, ["the cat"])
    with pytest.raises(TypeError, match="single string"):
        iter_sensitivity(model, "the cat")
    with pytest.raises(TypeError, match="unsupported data"):
        iter_sensitivity(model, 3)
    with pytest.raises(TypeError, match="each batch must be"):
        list(iter_sensitivity(model, [[1, 2, 3]]))
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="batch_size"):
        iter_sensitivity(model, ids, batch_size=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        iter_sensitivity(model, ids, max_seq_len=0)
    with pytest.raises(ValueError, match="unknown method"):
        iter_sensitivity(model, ids, method="dense")
    with pytest.raises(ValueError, match="before source"):
        iter_sensitivity(model, ids, layers=[0], source=1)
    with pytest.raises(TypeError, match="Checkpoint"):
        iter_sensitivity(model, ids, resume={"done": 1})
    with pytest.raises(ValueError, match="kernel"):
        iter_sensitivity(model, ids, resume=Checkpoint(tensors={}, meta={"kernel": "hessian"}))


# ----- reservoir -----------------------------------------------------------------------------------------
def sequential_algorithm_r(n: int, capacity: int, batch_sizes: list[int], seed: int) -> list[int]:
    """Textbook algorithm R, one sample at a time, fed the same uniform draws as the reservoir."""
    g = torch.Generator().manual_seed(seed)
    kept, t = [], 0
    for size in batch_sizes:
        late = max(0, t + size - max(t, capacity))
        draws = torch.rand(late, generator=g, dtype=torch.float64).tolist() if late else []
        for _ in range(size):
            if t < capacity:
                kept.append(t)
            else:
                r = int(draws.pop(0) * (t + 1))
                if r < capacity:
                    kept[r] = t
            t += 1
    return kept


def offer(reservoir: SampleReservoir, batch_sizes: list[int]) -> None:
    start = 0
    for size in batch_sizes:
        ids = (start + torch.arange(size))[:, None].expand(size, 2)  # row t holds token id t
        reservoir.add(ids, None, {0: ids[:, :, None].expand(size, 2, 2).float()})
        start += size


def test_reservoir_is_algorithm_r_and_uniform():
    sizes = [3, 7, 1, 7, 7, 7, 8]  # 40 samples
    for seed in range(5):
        r = SampleReservoir(8, 3, [0], seed=seed)
        offer(r, sizes)
        assert r.sample_index.tolist() == sequential_algorithm_r(40, 8, sizes, seed)
        assert torch.equal(r.input_ids[:, 0], r.sample_index) and (r.input_ids[:, 2] == 0).all()
        assert torch.equal(r.maps[0][:, 0, 0], r.sample_index.float()) and r.maps[0][:, 2].isnan().all()
    hits = torch.zeros(40)
    trials = 400
    for seed in range(trials):
        r = SampleReservoir(8, 2, [0], seed=seed)
        offer(r, sizes)
        hits[r.sample_index] += 1
    # Each sample is kept with probability 8/40: Binomial(400, 0.2) has mean 80 and sd 8.
    assert (hits - 80).abs().max() < 5 * 8
    chi2 = ((hits - 80) ** 2 / (trials * 0.2 * 0.8)).sum()
    assert chi2 < 75  # 39 degrees of freedom: P(chi2 > 75) < 1e-3


def test_reservoir_state_dict_roundtrip_and_errors():
    r = SampleReservoir(4, 3, [0, "final"], seed=1)
    ids = torch.arange(18).view(6, 3) % 11
    maps = {0: torch.rand(6, 3, 3), "final": torch.rand(6, 3, 3)}
    r.add(ids[:4], None, {k: v[:4] for k, v in maps.items()})
    copy = SampleReservoir(4, 3, [0, "final"], seed=99)
    copy.load_state_dict(r.state_dict())
    for res in (r, copy):
        res.add(ids[4:], torch.ones(2, 3, dtype=torch.bool), {k: v[4:] for k, v in maps.items()})
    for key, value in r.state_dict().items():
        assert identical(value, copy.state_dict()[key]), key
    assert r.size == 4 and r.seen == 6
    with pytest.raises(ValueError, match="seq_len=3"):
        SampleReservoir(4, 2, [0, "final"]).load_state_dict(r.state_dict())
    with pytest.raises(ValueError, match="capacity=4"):
        SampleReservoir(5, 3, [0, "final"]).load_state_dict(r.state_dict())
    with pytest.raises(ValueError, match="lacks .*maps.0"):
        SampleReservoir(4, 3, [0]).load_state_dict({k: v for k, v in r.state_dict().items() if k != "maps.0"})
    with pytest.raises(ValueError, match="exceeds"):
        r.add(
            torch.zeros(1, 4, dtype=torch.long),
            None,
            {0: torch.zeros(1, 4, 4), "final": torch.zeros(1, 4, 4)},
        )
    with pytest.raises(ValueError, match="lack layers"):
        r.add(ids[:1], None, {0: maps[0][:1]})
    with pytest.raises(ValueError, match="capacity"):
        SampleReservoir(-1, 3, [0])
