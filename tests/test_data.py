"""tscope_widgets.data: every shape of data a user may have, turned into batches of token ids."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from tscope_widgets import data as data_module
from tscope_widgets.data import BatchStream, batch_list, batch_stream, batch_tensors, id_tensors, known_samples


def ids_and_mask(N: int = 5, S: int = 4):
    ids = torch.arange(N * S).reshape(N, S)
    mask = torch.ones(N, S, dtype=torch.long)
    mask[1, -1] = 0
    return ids, mask


def collect(stream: BatchStream, skip_samples: int = 0, skip_batches: int = 0) -> list:
    return list(stream.batches(skip_samples, skip_batches))


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict"])
def test_tensors_are_cut_into_batches_and_restart_at_a_sample(form):
    ids, mask = ids_and_mask()
    data = {"tensor": ids, "tuple": (ids, mask), "dict": {"input_ids": ids, "attention_mask": mask}}[form]
    stream = batch_stream(data, 2)
    assert stream.total == 5 and stream.seq_len == 4
    batches = collect(stream)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert torch.equal(torch.cat([b[0] for b in batches]), ids)
    if form == "tensor":
        assert all(m is None for _, m in batches)
    else:
        assert torch.equal(torch.cat([b[1] for b in batches]), mask)
    resumed = collect(stream, skip_samples=3)  # restart after 3 samples
    assert torch.equal(torch.cat([b[0] for b in resumed]), ids[3:])
    assert batch_stream(data, 2, max_seq_len=3).seq_len == 3
    assert batch_stream(data, 2, max_seq_len=9).seq_len == 4


def test_iterables_of_batches_keep_their_batches_and_restart_at_a_batch():
    ids, mask = ids_and_mask()
    batches = [{"input_ids": ids[:2], "attention_mask": mask[:2]}, ids[2:]]
    stream = batch_stream(batches, 100)
    assert stream.total is None and stream.seq_len is None  # the first batch's length
    got = collect(stream)
    assert torch.equal(got[0][0], ids[:2]) and torch.equal(got[0][1], mask[:2])
    assert torch.equal(got[1][0], ids[2:]) and got[1][1] is None
    assert [torch.equal(a, ids[2:]) for a, _ in collect(stream, skip_batches=1)] == [True]
    assert batch_stream(batches, 1, max_seq_len=7).seq_len == 7


def test_a_dataloader_knows_its_samples():
    dataset = torch.utils.data.TensorDataset(torch.zeros(7, 3, dtype=torch.long))
    assert known_samples(torch.utils.data.DataLoader(dataset, batch_size=2)) == 7
    assert known_samples(torch.utils.data.DataLoader(dataset, batch_size=2, drop_last=True)) == 6
    assert known_samples([torch.zeros(2, 3)]) is None
    assert known_samples(iter([])) is None
    loader = torch.utils.data.DataLoader([{"input_ids": torch.tensor([1, 2, 3])}] * 5, batch_size=2)
    stream = batch_stream(loader, 1)
    assert stream.total == 5 and [b[0].shape for b in collect(stream)] == [(2, 3), (2, 3), (1, 3)]


class FakeTokenizer:
    """Whitespace words -> ids 1.., pad 0, right padding, truncation; the call shape of a HF tokenizer."""

    pad_token = "[PAD]"

    def __call__(self, texts, padding=None, padding_side=None, return_tensors=None, truncation=False,
                 max_length=None):
        rows = [[len(w) for w in t.split()] for t in texts]
        if truncation:
            rows = [r[:max_length] for r in rows]
        if return_tensors is None:
            return {"input_ids": rows}
        assert padding == "longest" and padding_side == "right" and return_tensors == "pt"
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": mask}


def test_strings_with_a_tokenizer():
    texts = ["a bb ccc", "dddd", "e ff ggg hhhh iiiii"]
    stream = batch_stream(texts, 2, tokenizer=FakeTokenizer())
    assert stream.total == 3 and stream.seq_len == 5  # the longest text
    first, second = collect(stream)
    assert first[0].tolist() == [[1, 2, 3], [4, 0, 0]] and first[1].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert second[0].tolist() == [[1, 2, 3, 4, 5]]
    assert [b[0].tolist() for b in collect(stream, skip_samples=2)] == [[[1, 2, 3, 4, 5]]]
    short = batch_stream(texts, 2, max_seq_len=2, tokenizer=FakeTokenizer())
    assert short.seq_len == 2 and collect(short)[1][0].tolist() == [[1, 2]]


def test_bad_data_is_refused_with_its_reason():
    with pytest.raises(ValueError, match="needs 'input_ids'"):
        batch_stream({"ids": torch.zeros(2, 2)}, 1)
    with pytest.raises(ValueError, match="data is empty"):
        batch_stream(torch.zeros(0, 4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="data is empty"):
        batch_stream([], 1)
    with pytest.raises(TypeError, match="single string"):
        batch_stream("the cat", 1)
    with pytest.raises(TypeError, match="tokenizer"):
        batch_stream(["the cat"], 1)
    no_pad = type("NoPad", (FakeTokenizer,), {"pad_token": None})()
    with pytest.raises(ValueError, match="no pad token"):
        batch_stream(["the cat"], 1, tokenizer=no_pad)
    with pytest.raises(ValueError, match="zero tokens"):
        batch_stream(["", " "], 1, tokenizer=FakeTokenizer())
    with pytest.raises(TypeError, match="unsupported data"):
        batch_stream(3, 1)
    with pytest.raises(TypeError, match="each batch must be"):
        collect(batch_stream([[1, 2, 3]], 1))
    with pytest.raises(ValueError, match="input_ids must be a tensor"):
        id_tensors(torch.zeros(3))
    with pytest.raises(ValueError, match="attention_mask must be a tensor"):
        id_tensors((torch.zeros(2, 3), torch.zeros(2, 2)))
    with pytest.raises(ValueError, match="tuple of data must be"):
        id_tensors((torch.zeros(2, 3),) * 3)


def test_one_batch_or_many():
    ids = torch.zeros(2, 3, dtype=torch.long)
    assert batch_tensors(ids) == (ids, None)
    assert batch_tensors({"input_ids": ids})[0] is ids
    one = {"input_ids": ids}
    assert batch_list(one) == [one]
    assert batch_list([one, one]) == [one, one]
    assert batch_list(iter([one])) == [one]
    assert batch_list([], allow_empty=True) == []
    with pytest.raises(ValueError, match="data holds no batches"):
        batch_list([])
    with pytest.raises(ValueError, match="data holds no batches"):
        batch_list(iter([]))


def test_data_imports_nothing_above_it():
    """data.py sits under the kernels: it may use models/, never kernels, widgets, jobs or the CLI."""
    tree = ast.parse(Path(data_module.__file__).read_text())
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            modules.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            modules.extend(a.name for a in node.names)
    ours = [m for m in modules if m.startswith(".") or m.startswith("tscope_widgets")]
    assert all(m.lstrip(".").removeprefix("tscope_widgets.").startswith("models") for m in ours), ours
