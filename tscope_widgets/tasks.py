"""Synthetic tasks with known mechanisms, generated on the fly (nothing is downloaded).

- :class:`InductionTask`: ``[BOS, r_1 … r_k, r_1 … r_k]``, the repeated-random-tokens setting in which
  two-layer attention models form induction heads (Olsson et al. 2022, "In-context learning and
  induction heads", Transformer Circuits Thread).
- :class:`ModularAdditionTask`: ``[a, b, =, c]`` with ``c = (a + b) mod p`` (Power et al. 2022,
  "Grokking", arXiv:2201.02177; Nanda et al. 2023, "Progress measures for grokking via mechanistic
  interpretability", ICLR).
- :class:`AdditionTask`: ``XXXXX+YYYYY=ZZZZZZ``, five-digit addition with a six-digit answer and
  enriched carry cascades (Quirke & Barez 2024, "Understanding Addition in Transformers", ICLR), the
  task of the Hessian analysis of Ormaniec, Dangel & Singh (ICLR 2025); cross-entropy or MSE on the answer.
- :func:`induction_reading` and :func:`describe_induction`: where the induction signature sits in the
  sensitivity maps of the fixed induction layout, in numbers and in words (what ``tscope demo`` reports).

Label convention (the Hugging Face one, which :meth:`ModelAdapter.loss` uses): ``labels`` has the shape
of ``input_ids``; ``labels[:, t]`` is the token at position ``t`` when position ``t - 1`` should predict
it, and ``-100`` (ignore) elsewhere. A causal model's logits at position ``t - 1`` are scored against
``labels[:, t]``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


class Task(abc.ABC):
    """A synthetic sequence task.

    Attributes:
        name: Registry name.
        vocab_size: Number of token ids (every id in ``sample`` lies in ``[0, vocab_size)``).
        seq_len: Length ``S`` of every sequence ``sample`` returns.
    """

    name: str
    vocab_size: int
    seq_len: int

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, **kwargs) -> dict[str, Tensor]:
        """``n`` sequences ``{"input_ids": [n, S] int64, "labels": [n, S] int64}`` (see the module doc)."""

    @abc.abstractmethod
    def token_labels(self, ids: Tensor) -> list[str]:
        """Readable text for each token id of a 1-D ``ids`` tensor (for heatmap axes)."""

    def held_out(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """An evaluation batch ``{"input_ids", "labels"}`` the training batches do not determine.

        Default: 1024 fresh samples from ``generator``.
        """
        return self.sample(1024, generator)

    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``get_task(task.name, **task.config())`` rebuilds it."""
        return {}

    def accuracy(self, logits: Tensor, labels: Tensor) -> float:
        """Fraction of labelled positions where the argmax of the previous position's logits is the label.

        Args:
            logits: ``[N, S, V]`` float, a causal model's output for the sequences.
            labels: ``[N, S]`` int64 with ``-100`` where nothing is scored.

        Returns:
            Accuracy in ``[0, 1]``.

        Raises:
            ValueError: on mismatched shapes or when no position carries a label.
        """
        if logits.ndim != 3 or labels.shape != logits.shape[:2]:
            raise ValueError(
                f"expected logits [N, S, V] and labels [N, S]; "
                f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        target = labels[:, 1:]
        scored = target != IGNORE_INDEX
        if not scored.any():
            raise ValueError("no position carries a label; accuracy is undefined")
        correct = (logits[:, :-1].argmax(-1) == target) & scored
        return correct.sum().item() / scored.sum().item()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_n(n) -> int:
    return _check_int("n (number of sequences)", n, 1)


class InductionTask(Task):
    """Repeated random tokens: ``[BOS, r_1 … r_k, r_1 … r_k]``, right-padded to ``S = 2 k_max + 1``.

    The ``r_j`` are drawn without replacement from ``num_symbols`` symbols, so each has one earlier
    occurrence to look up. In the second half, position ``k + j`` holds ``r_j`` and should predict
    ``r_{j+1}``: the token one after the earlier occurrence of the current token — the induction
    pattern (Olsson et al. 2022). Those targets ``r_2 … r_k`` carry labels; everything else (the random
    first half, the first repeated token, whose start is unknowable when ``k`` varies, padding) is
    ``-100``. With ``k_min < k_max`` each sequence draws its own ``k``, so no fixed positional offset
    solves the task and the model has to learn induction by content.

    Token ids: symbols ``0 … num_symbols - 1``, then ``BOS = num_symbols``, ``PAD = num_symbols + 1``.

    Args:
        num_symbols: Size of the random-token alphabet (``>= k_max``).
        k_max: Longest repeated segment; sets ``seq_len = 2 * k_max + 1``.
        k_min: Shortest segment (default ``k_max``: every sequence has the fixed layout).
    """

    name = "induction"

    def __init__(self, num_symbols: int = 32, k_max: int = 12, k_min: int | None = None):
        self.num_symbols = _check_int("num_symbols", num_symbols, 2)
        self.k_max = _check_int("k_max", k_max, 2)
        self.k_min = self.k_max if k_min is None else _check_int("k_min", k_min, 2)
        if self.k_min > self.k_max:
            raise ValueError(f"k_min={self.k_min} exceeds k_max={self.k_max}")
        if self.k_max > self.num_symbols:
            raise ValueError(
                f"k_max={self.k_max} exceeds num_symbols={self.num_symbols}: a segment holds distinct symbols"
            )
        self.bos = self.num_symbols
        self.pad = self.num_symbols + 1
        self.vocab_size = self.num_symbols + 2
        self.seq_len = 2 * self.k_max + 1

    def config(self) -> dict:
        """``{"num_symbols", "k_max", "k_min"}``: the constructor arguments (see :meth:`Task.config`)."""
        return {"num_symbols": self.num_symbols, "k_max": self.k_max, "k_min": self.k_min}

    def sample(
        self, n: int, generator: torch.Generator | None = None, k: int | None = None
    ) -> dict[str, Tensor]:
        """``n`` sequences ``{"input_ids", "labels"}``, each ``[n, 2 k_max + 1]`` int64.

        Args:
            n: Number of sequences.
            generator: Source of randomness (CPU ``torch.Generator``); ``None`` uses the global one.
            k: Fixed segment length for every sequence (``k_min <= k <= k_max``); default: uniform
                in ``[k_min, k_max]`` per sequence.
        """
        n = _check_n(n)
        if k is not None:
            k = _check_int("k", k, self.k_min)
            if k > self.k_max:
                raise ValueError(f"k={k} exceeds k_max={self.k_max}")
            ks = torch.full((n,), k, dtype=torch.long)
        else:
            ks = torch.randint(self.k_min, self.k_max + 1, (n,), generator=generator)
        # Distinct symbols per row: the first k_max entries of a random permutation.
        segment = torch.rand(n, self.num_symbols, generator=generator).argsort(dim=1)[
            :, : self.k_max
        ]  # [n, k_max]
        t = torch.arange(self.seq_len)  # [S]
        kk = ks[:, None]  # [n, 1]
        first = (t >= 1) & (t <= kk)  # [n, S]
        second = (t > kk) & (t <= 2 * kk)
        # Position t of the first half holds r_t, of the second half r_{t-k} (1-based indices into `segment`).
        j = torch.where(second, t - kk, t).clamp(1, self.k_max) - 1  # [n, S]
        tokens = segment.gather(1, j)
        ids = torch.full((n, self.seq_len), self.pad, dtype=torch.long)
        ids[:, 0] = self.bos
        ids = torch.where(first | second, tokens, ids)
        predictable = second & (t >= kk + 2)  # targets r_2 … r_k
        labels = torch.where(predictable, ids, torch.full_like(ids, IGNORE_INDEX))
        return {"input_ids": ids, "labels": labels}

    def token_labels(self, ids: Tensor) -> list[str]:
        """``"BOS"``, ``"PAD"`` or ``"t{id}"`` for each id of ``ids [S]``."""
        special = {self.bos: "BOS", self.pad: "PAD"}
        return [special.get(i, f"t{i}") for i in torch.as_tensor(ids).reshape(-1).tolist()]

    def role_labels(self, k: int | None = None) -> list[str]:
        """What each position of the fixed layout with segment length ``k`` (default ``k_max``) holds.

        ``["BOS", "r1", …, "rk", "copy r1", …, "copy rk"]`` followed by ``"PAD"`` up to ``seq_len``.
        """
        k = self.k_max if k is None else _check_int("k", k, 1)
        if k > self.k_max:
            raise ValueError(f"k={k} exceeds k_max={self.k_max}")
        roles = ["BOS"] + [f"r{j}" for j in range(1, k + 1)] + [f"copy r{j}" for j in range(1, k + 1)]
        return roles + ["PAD"] * (self.seq_len - len(roles))


class ModularAdditionTask(Task):
    """``[a, b, =, c]`` with ``c = (a + b) mod p``; only ``c`` carries a label (predicted at ``=``).

    The ``p²`` pairs are split once, by ``split_seed``, into a train set (fraction ``train_fraction``)
    and a held-out test set, as in the grokking experiments (Power et al. 2022; Nanda et al. 2023).

    Token ids: residues ``0 … p - 1``, then ``"="`` as ``p``.

    Args:
        p: Modulus (``>= 2``).
        train_fraction: Fraction of pairs in the train split, in ``(0, 1)``.
        split_seed: Seed of the train/test permutation of pairs.
    """

    name = "modadd"
    seq_len = 4

    def __init__(self, p: int = 23, train_fraction: float = 0.5, split_seed: int = 0):
        self.p = _check_int("p", p, 2)
        if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float)):
            raise TypeError(f"train_fraction must be a float, got {type(train_fraction).__name__}")
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
        self.train_fraction = float(train_fraction)
        self.split_seed = _check_int("split_seed", split_seed, 0)
        self.equals = self.p
        self.vocab_size = self.p + 1
        a, b = torch.meshgrid(torch.arange(self.p), torch.arange(self.p), indexing="ij")
        pairs = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)  # [p², 2]
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(self.split_seed))
        n_train = min(max(1, round(self.train_fraction * len(pairs))), len(pairs) - 1)
        self.train_pairs = pairs[order[:n_train]]  # [P_train, 2]
        self.test_pairs = pairs[order[n_train:]]  # [P_test, 2]

    def config(self) -> dict:
        """``{"p", "train_fraction", "split_seed"}``: the constructor arguments (see :meth:`Task.config`)."""
        return {"p": self.p, "train_fraction": self.train_fraction, "split_seed": self.split_seed}

    def encode(self, pairs: Tensor) -> dict[str, Tensor]:
        """Sequences for ``pairs [N, 2]`` (int64): ``{"input_ids", "labels"}``, each ``[N, 4]`` int64."""
        pairs = torch.as_tensor(pairs, dtype=torch.long)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must have shape [N, 2], got {tuple(pairs.shape)}")
        if pairs.numel() and (pairs.min() < 0 or pairs.max() >= self.p):
            raise ValueError(f"pair entries must lie in [0, {self.p})")
        a, b = pairs[:, 0], pairs[:, 1]
        c = (a + b) % self.p
        ids = torch.stack([a, b, torch.full_like(a, self.equals), c], dim=1)
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, 3] = c
        return {"input_ids": ids, "labels": labels}

    def split(self, name: str) -> dict[str, Tensor]:
        """Every pair of split ``"train"`` or ``"test"``, encoded (see :meth:`encode`)."""
        return self.encode(self._pairs(name))

    def _pairs(self, split: str) -> Tensor:
        if split == "train":
            return self.train_pairs
        if split == "test":
            return self.test_pairs
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")

    def held_out(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Every test pair, encoded (``generator`` is unused: the split is fixed by ``split_seed``)."""
        return self.split("test")

    def sample(
        self, n: int, generator: torch.Generator | None = None, split: str = "train"
    ) -> dict[str, Tensor]:
        """``n`` sequences drawn with replacement from the pairs of ``split`` (``"train"`` or ``"test"``)."""
        n = _check_n(n)
        pairs = self._pairs(split)
        idx = torch.randint(0, len(pairs), (n,), generator=generator)
        return self.encode(pairs[idx])

    def token_labels(self, ids: Tensor) -> list[str]:
        """``"="`` or the residue as text for each id of ``ids [S]``."""
        return ["=" if i == self.equals else str(i) for i in torch.as_tensor(ids).reshape(-1).tolist()]


class AdditionTask(Task):
    """``XXXXX+YYYYY=ZZZZZZ``: two ``n``-digit numbers and their ``n + 1``-digit sum, most significant first.

    Sequences are ``3 n + 3`` tokens (18 for ``n = 5``): the operands zero-padded to ``n`` digits, ``+``,
    ``=``, then the sum zero-padded to ``n + 1`` digits (its first digit is the final carry). Only the
    ``n + 1`` answer tokens carry labels; a causal model predicts them from the logits at positions
    ``[-(n + 2):-1]`` (``[-7:-1]`` for ``n = 5``). Uniform operands rarely chain carries, so, as in
    Quirke & Barez (2024), a batch is *enriched* with probability ``force_batch_prob`` (0.2): each digit pair
    ``(x_i, y_i)`` of it is then, with probability ``force_pair_prob`` (0.2), replaced by
    ``(x_i, 9 - x_i)`` (a pair summing to 9, which passes a carry on). Unenriched pairs sum to 9 with
    probability 1/10.

    Token ids: digits ``0 … 9``, ``"+" = 10``, ``"=" = 11`` (vocabulary 12).

    Args:
        n_digits: Digits per operand (``>= 1``; 5 in the paper).
        force_batch_prob: Probability that a batch is enriched, in ``[0, 1]``.
        force_pair_prob: Probability that a digit pair of an enriched batch is forced to sum to 9, in ``[0, 1]``.

    References:
        Quirke & Barez (2024), "Understanding Addition in Transformers", ICLR; Ormaniec, Dangel & Singh
        (2025), "What Does It Mean to Be a Transformer? Insights from a Theoretical Hessian Analysis", ICLR.
    """

    name = "addition"
    plus, equals, vocab_size = 10, 11, 12

    def __init__(self, n_digits: int = 5, force_batch_prob: float = 0.2, force_pair_prob: float = 0.2):
        self.n_digits = _check_int("n_digits", n_digits, 1)
        if self.n_digits > 17:
            raise ValueError(f"n_digits must be <= 17 (sums are computed in int64), got {n_digits}")
        for name, value in (("force_batch_prob", force_batch_prob), ("force_pair_prob", force_pair_prob)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        self.force_batch_prob = float(force_batch_prob)
        self.force_pair_prob = float(force_pair_prob)
        self.seq_len = 3 * self.n_digits + 3
        self.answer_len = self.n_digits + 1

    def config(self) -> dict:
        """``{"n_digits", "force_batch_prob", "force_pair_prob"}`` (see :meth:`Task.config`)."""
        return {"n_digits": self.n_digits, "force_batch_prob": self.force_batch_prob,
                "force_pair_prob": self.force_pair_prob}

    def encode(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Sequences for operands ``x, y [N]`` (int64 in ``[0, 10^n)``): ``{"input_ids", "labels"}`` ``[N, 3n+3]``."""
        x, y = torch.as_tensor(x, dtype=torch.long), torch.as_tensor(y, dtype=torch.long)
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"x and y must be 1-D of one length, got {tuple(x.shape)} and {tuple(y.shape)}")
        top = 10**self.n_digits
        if x.numel() and (min(x.min(), y.min()) < 0 or max(x.max(), y.max()) >= top):
            raise ValueError(f"operands must lie in [0, {top}) for n_digits={self.n_digits}")
        ids = torch.cat([self._digits(x, self.n_digits), torch.full_like(x, self.plus)[:, None],
                         self._digits(y, self.n_digits), torch.full_like(x, self.equals)[:, None],
                         self._digits(x + y, self.answer_len)], dim=1)  # [N, 3n+3]
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, -self.answer_len :] = ids[:, -self.answer_len :]
        return {"input_ids": ids, "labels": labels}

    @staticmethod
    def _digits(v: Tensor, width: int) -> Tensor:
        """Decimal digits of ``v [N]``, most significant first: ``[N, width]``."""
        powers = 10 ** torch.arange(width - 1, -1, -1, device=v.device)  # [width]
        return (v[:, None] // powers) % 10

    def sample(
        self, n: int, generator: torch.Generator | None = None, force: bool | None = None
    ) -> dict[str, Tensor]:
        """One batch of ``n`` sequences; enriched with probability ``force_batch_prob`` (or as ``force`` says).

        Args:
            n: Number of sequences.
            generator: Source of randomness (CPU ``torch.Generator``).
            force: ``True``/``False`` enriches or not regardless of ``force_batch_prob``; ``None`` draws it.
        """
        n = _check_n(n)
        k = self.n_digits
        xd = torch.randint(0, 10, (n, k), generator=generator)  # [n, k] digits, most significant first
        yd = torch.randint(0, 10, (n, k), generator=generator)
        enriched = torch.rand((), generator=generator) < self.force_batch_prob  # always drawn: same stream
        if force is not None:
            enriched = bool(force)
        if enriched:
            forced = torch.rand(n, k, generator=generator) < self.force_pair_prob
            yd = torch.where(forced, 9 - xd, yd)
        powers = 10 ** torch.arange(k - 1, -1, -1)
        return self.encode((xd * powers).sum(1), (yd * powers).sum(1))

    def held_out(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """1024 fresh unenriched sequences (the natural distribution of operands)."""
        return self.sample(1024, generator, force=False)

    def answer_logits(self, logits: Tensor) -> Tensor:
        """The logits that predict the answer: ``logits[:, -(n+2):-1]``, ``[N, n+1, V]``."""
        if logits.ndim != 3 or logits.shape[1] != self.seq_len or logits.shape[2] != self.vocab_size:
            raise ValueError(f"expected logits [N, {self.seq_len}, {self.vocab_size}], got {tuple(logits.shape)}")
        return logits[:, -self.answer_len - 1 : -1]

    def loss(self, logits: Tensor, batch: dict[str, Tensor], kind: str = "ce") -> Tensor:
        r"""Loss on the answer digits.

        ``"ce"``: cross-entropy averaged over the batch and the ``n + 1`` answer positions.
        ``"mse"``: :math:`\frac1N \sum_{b} \sum_{t} \lVert z_{bt} - e_{y_{bt}} \rVert^2`, the squared distance of
        the logits ``z`` to the one-hot answer, summed over answer positions and vocabulary, averaged over
        the batch (the MSE variant of Ormaniec et al. 2025).

        Args:
            logits: ``[N, 3n+3, 12]`` float, a causal model's output for ``batch["input_ids"]``.
            batch: ``{"input_ids": [N, 3n+3]}`` as :meth:`sample` returns.
            kind: ``"ce"`` or ``"mse"``.

        Returns:
            Scalar tensor in the logits' dtype.
        """
        if kind not in ("ce", "mse"):
            raise ValueError(f"kind must be 'ce' or 'mse', got {kind!r}")
        z = self.answer_logits(logits)  # [N, n+1, V]
        target = batch["input_ids"][:, -self.answer_len :]
        if target.shape != z.shape[:2]:
            got = tuple(batch["input_ids"].shape)
            raise ValueError(f"batch input_ids {got} do not match logits {tuple(logits.shape)}")
        if kind == "ce":
            return F.cross_entropy(z.reshape(-1, self.vocab_size), target.reshape(-1))
        onehot = F.one_hot(target, self.vocab_size).to(z.dtype)
        return (z - onehot).square().sum((1, 2)).mean()

    def token_labels(self, ids: Tensor) -> list[str]:
        """The digit, ``"+"`` or ``"="`` for each id of ``ids [S]``."""
        special = {self.plus: "+", self.equals: "="}
        return [special.get(i, str(i)) for i in torch.as_tensor(ids).reshape(-1).tolist()]


TASKS: dict[str, Callable[..., Task]] = {
    "induction": InductionTask,
    "modadd": ModularAdditionTask,
    "addition": AdditionTask,
}


def get_task(name: str | Task, **kwargs) -> Task:
    """The task registered as ``name`` built with ``kwargs`` (a :class:`Task` is returned as is).

    Raises:
        ValueError: for an unknown name (the message lists the registered ones), or keyword arguments
            the task does not take.
    """
    if isinstance(name, Task):
        if kwargs:
            raise ValueError(
                f"got a Task instance and keyword arguments {sorted(kwargs)}; pass one or the other"
            )
        return name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)}")
    try:
        return TASKS[name](**kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ValueError(f"task {name!r}: {err}") from None
        raise


# ======================================================================================
# Reading the induction signature off a sensitivity map (what `tscope demo` reports)
# ======================================================================================
def induction_reading(stats: Mapping, k: int) -> dict[int | str, dict[str, float]]:
    r"""Where the induction signature sits in each layer's mean map of the fixed layout ``[BOS, r, r]``.

    Output position ``i = k + j`` (``copy r_j``, ``1 <= j < k``) predicts ``r_{j+1}``, which sits at input
    position ``j + 1``: the *induction cell*. For each layer this returns the mean of the induction
    cells, the mean of the other strictly-causal off-diagonal cells ``j' < i`` of the same rows, their
    ratio, the fraction of those rows whose largest off-diagonal cell is the induction cell, and the
    same fraction for the previous-token cell ``i - 1`` (what a previous-token head produces).
    """
    out = {}
    rows = torch.arange(k + 1, 2 * k)  # copy r_1 … copy r_{k-1}
    target = rows - k + 1
    for layer, state in stats.items():
        mean = state.mean
        S = mean.shape[0]
        if S < 2 * k:
            continue
        sub = mean[rows]  # [k-1, S]
        cols = torch.arange(S)
        off = cols[None, :] < rows[:, None]
        is_target = cols[None, :] == target[:, None]
        induction = sub[is_target]
        others = sub[off & ~is_target]
        scored = torch.where(off, sub, torch.tensor(float("-inf"), dtype=sub.dtype))
        top = scored.argmax(1)
        out[layer] = {
            "induction_mean": float(induction.mean()),
            "other_mean": float(others.mean()),
            "ratio": float(induction.mean() / others.mean()),
            "rows_topped_by_induction": float((top == target).double().mean()),
            "rows_topped_by_previous": float((top == rows - 1).double().mean()),
        }
    return out

def _layer_name(layer: int | str) -> str:
    return "the final norm" if layer == "final" else f"layer {layer}"

def describe_induction(reading: Mapping[int | str, Mapping[str, float]], k: int, roles: Sequence[str]) -> str:
    """One paragraph stating what :func:`induction_reading` found (numbers computed, not assumed)."""
    if not reading:
        return "No layer has the fixed induction layout; nothing to read."
    n_rows = k - 1
    parts = []
    for layer, r in reading.items():
        topped = round(r["rows_topped_by_induction"] * n_rows)
        previous = round(r["rows_topped_by_previous"] * n_rows)
        parts.append(
            f"In {_layer_name(layer)}, the second-half positions ({roles[k + 1]} … {roles[2 * k - 1]}) "
            f"are on average {r['ratio']:.1f}x more sensitive to the token one after the earlier "
            f"occurrence of their own token (e.g. row '{roles[k + 2]}' → column '{roles[3]}': the "
            f"induction target) than to the other earlier positions (mean {r['induction_mean']:.3g} vs "
            f"{r['other_mean']:.3g}); that cell is the largest off-diagonal entry in {topped} of {n_rows} "
            f"rows, the previous token in {previous}."
        )
    clearest = max(
        reading, key=lambda layer: (reading[layer]["rows_topped_by_induction"], reading[layer]["ratio"])
    )
    strongest = max(reading, key=lambda layer: reading[layer]["ratio"])
    parts.append(
        f"The induction cell tops the most rows in {_layer_name(clearest)}; the largest ratio is in "
        f"{_layer_name(strongest)} ({reading[strongest]['ratio']:.1f}x)."
    )
    return " ".join(parts)
