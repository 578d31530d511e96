"""What data can be: the one place that turns what a user has into batches of token ids.

Every analysis reads token ids; users have them in many shapes. This module is the one answer to what
those shapes are, and how they become batches:

- an id tensor ``[N, S]``, a tuple ``(ids, mask)`` or a dict with ``input_ids`` and an optional
  ``attention_mask`` (``[N, S]``, 1 = token): cut into batches of ``batch_size`` samples;
- a list of strings with a Hugging Face ``tokenizer`` (one with a pad token): each batch is padded on
  the right to its longest text and truncated to ``max_seq_len``;
- any other iterable of batches (a ``DataLoader``, a list of batches): dicts with ``input_ids`` and an
  optional ``attention_mask``, or id tensors ``[B, S]``.

:func:`batch_stream` gives a :class:`BatchStream` of ``(ids, mask)`` pairs that can restart after a number
of samples or batches (a resumed run); :func:`known_samples` counts the samples of a ``DataLoader`` when it
can; :func:`id_tensors` and :func:`batch_tensors` read one data set or one batch; :func:`batch_list` reads
one batch dict or an iterable of them into a list (the kernels that go over their data many times);
:func:`first_batch` reads what can be checked before a run starts (the ids of a tensor, the first batch
of a re-iterable data set).

Nothing here imports the kernels, widgets, jobs or the command line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader

__all__ = [
    "BatchStream",
    "batch_stream",
    "batch_list",
    "id_tensors",
    "batch_tensors",
    "first_batch",
    "known_samples",
]


@dataclass
class BatchStream:
    """Batches ``(ids [B, S_b], mask [B, S_b] | None)`` of a data set, resumable at a sample or batch."""

    batches: Callable[[int, int], Iterator[tuple[Tensor, Tensor | None]]]  # (skip_samples, skip_batches)
    total: int | None
    seq_len: int | None  # None: the first batch's length


def batch_stream(data, batch_size: int, max_seq_len: int | None = None, tokenizer=None) -> BatchStream:
    """The batches of any data a user has (see the module's list), restartable after some samples or batches.

    Args:
        data: An id tensor ``[N, S]``, ``(ids, mask)``, a dict with ``input_ids``, a list of strings, or an
            iterable of batches.
        batch_size: Samples per batch for tensors and strings (an iterable keeps its own batches).
        max_seq_len: Truncation length; ``BatchStream.seq_len`` is ``min(S, max_seq_len)`` for tensors,
            the longest tokenized text for strings, and ``max_seq_len`` itself (``None``: the first
            batch's length) for an iterable of batches.
        tokenizer: A Hugging Face tokenizer with a pad token, required for strings.

    Returns:
        :class:`BatchStream`; ``total`` is the number of samples when known.

    Raises:
        ValueError: Empty data, a dict without ``input_ids``, mis-shaped tensors, a tokenizer without a
            pad token.
        TypeError: Unsupported data, a single string, strings without a tokenizer.
    """
    if isinstance(data, Mapping) and "input_ids" not in data:
        raise ValueError(
            f"a dict of data needs 'input_ids' (and optionally 'attention_mask'), got keys {list(data)}"
        )
    if (
        isinstance(data, Tensor)
        or (isinstance(data, tuple) and data and isinstance(data[0], Tensor))
        or (isinstance(data, Mapping) and "input_ids" in data)
    ):
        ids, mask = id_tensors(data)
        N, S = ids.shape
        if N == 0 or S == 0:
            raise ValueError(f"data is empty: input_ids has shape {tuple(ids.shape)}")

        def tensor_batches(skip: int, _: int):
            for a in range(skip, N, batch_size):
                yield ids[a : a + batch_size], None if mask is None else mask[a : a + batch_size]

        return BatchStream(tensor_batches, N, S if max_seq_len is None else min(S, max_seq_len))
    if isinstance(data, str):
        raise TypeError("data is a single string; pass a list of strings (with tokenizer=...)")
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
        return _string_stream(list(data), batch_size, max_seq_len, tokenizer)
    if isinstance(data, (list, tuple)) and not data:
        raise ValueError("data is empty")
    if not isinstance(data, Iterable):
        raise TypeError(
            f"unsupported data of type {type(data).__name__}: pass an id tensor [N, S], (ids, mask), a dict "
            "with input_ids, a list of strings with a tokenizer, or an iterable of batches"
        )

    def iterable_batches(_: int, skip: int):
        for batch in itertools.islice(iter(data), skip, None):
            yield batch_tensors(batch)

    return BatchStream(iterable_batches, known_samples(data), max_seq_len)


def first_batch(
    data, batch_size: int, max_seq_len: int | None = None, tokenizer=None
) -> tuple[Tensor, Tensor | None] | None:
    """What can be checked of ``data`` before a run: ``(ids, mask)`` of an id tensor (all ``[N, S]`` of it:
    checking it is cheap), else the first batch ``[B, S_b]`` (tokenized strings, a ``DataLoader``, a list
    of batches); None for a one-shot iterator (a generator), whose first batch reading would consume.

    Args:
        data: What :func:`batch_stream` takes.
        batch_size: Samples per batch (strings).
        max_seq_len: Truncation length.
        tokenizer: For strings.

    Raises:
        ValueError, TypeError: What :func:`batch_stream` and :func:`batch_tensors` refuse (empty data,
            unsupported types, a batch without ``input_ids``).
    """
    if isinstance(data, Iterator):
        return None
    if isinstance(data, Tensor) or (isinstance(data, tuple) and data and isinstance(data[0], Tensor)) or (
        isinstance(data, Mapping) and "input_ids" in data
    ):
        return id_tensors(data)
    stream = batch_stream(data, batch_size, max_seq_len, tokenizer)
    return next(stream.batches(0, 0), None)


def id_tensors(data) -> tuple[Tensor, Tensor | None]:
    """``(input_ids [N, S], attention_mask [N, S] or None)`` of an id tensor, an ``(ids, mask)`` tuple or a
    dict with ``input_ids``, checked for shape (not for dtype or values)."""
    if isinstance(data, Tensor):
        ids, mask = data, None
    elif isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"a tuple of data must be (input_ids, attention_mask), got {len(data)} items")
        ids, mask = data
    else:
        ids, mask = data["input_ids"], data.get("attention_mask")
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise ValueError(
            f"input_ids must be a tensor [N, S], got {getattr(ids, 'shape', type(ids).__name__)}"
        )
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != ids.shape):
        raise ValueError(f"attention_mask must be a tensor of input_ids' shape {tuple(ids.shape)}")
    return ids, mask


def batch_tensors(batch) -> tuple[Tensor, Tensor | None]:
    """``(input_ids, attention_mask or None)`` of one batch: an id tensor ``[B, S]`` or a dict with
    ``input_ids``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping) and "input_ids" in batch:
        return batch["input_ids"], batch.get("attention_mask")
    raise TypeError(
        f"each batch must be an id tensor [B, S] or a dict with 'input_ids' (and 'attention_mask'), "
        f"got {type(batch).__name__}"
    )


def known_samples(data) -> int | None:
    """Samples in a ``DataLoader`` with a sized dataset and a fixed batch size; else ``None``."""
    dataset, bs = getattr(data, "dataset", None), getattr(data, "batch_size", None)
    if isinstance(data, DataLoader) and bs and hasattr(dataset, "__len__"):
        n = len(dataset)
        return n - n % bs if data.drop_last else n
    return None


def _string_stream(texts: list[str], batch_size: int, max_seq_len: int | None, tokenizer) -> BatchStream:
    if tokenizer is None:
        raise TypeError(
            "data is a list of strings: pass tokenizer=<a Hugging Face tokenizer> to turn it into ids"
        )
    if getattr(tokenizer, "pad_token", None) is None:
        raise ValueError(
            "the tokenizer has no pad token; set one, e.g. tokenizer.pad_token = tokenizer.eos_token"
        )
    trunc = {"truncation": True, "max_length": max_seq_len} if max_seq_len else {}
    longest = max(len(ids) for ids in tokenizer(texts, **trunc)["input_ids"])
    if longest == 0:
        raise ValueError("every text tokenizes to zero tokens")

    def string_batches(skip: int, _: int):
        for a in range(skip, len(texts), batch_size):
            enc = tokenizer(
                texts[a : a + batch_size],
                padding="longest",
                padding_side="right",
                return_tensors="pt",
                **trunc,
            )
            yield enc["input_ids"], enc.get("attention_mask")

    return BatchStream(string_batches, len(texts), longest)




def batch_list(data: Mapping[str, Any] | Iterable[Any], allow_empty: bool = False) -> list:
    """The batches of ``data`` as a list: ``[data]`` for one batch (a mapping, e.g. a dict with
    ``input_ids``), else every item of the iterable, read once.

    Args:
        data: One batch, or an iterable of batches (a list, a ``DataLoader``, a generator).
        allow_empty: Accept an iterable without batches (a rank's empty shard under torch.distributed).

    Raises:
        ValueError: An empty iterable, unless ``allow_empty``.
    """
    batches = [data] if isinstance(data, Mapping) else list(data)
    if not batches and not allow_empty:
        raise ValueError("data holds no batches")
    return batches
