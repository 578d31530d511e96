r"""Elementwise streaming statistics (count, mean, variance, min, max) that merge exactly.

A :class:`WelfordState` holds, for every cell of a fixed shape (e.g. the ``[S, S]`` grid of a
position-to-position sensitivity map), the running count ``n``, mean :math:`\bar x`, sum of squared
deviations :math:`M_2 = \sum_k (x_k - \bar x)^2`, minimum and maximum of the values seen so far.

``update`` takes a whole batch ``[N, *shape]`` at once: the batch's own moments are computed with
masked reductions (corrected two-pass: mean first, then :math:`M_2 = \sum d^2 - (\sum d)^2 / n`
with :math:`d = x - \bar x_B`), and merged into the running state with the pairwise formula of
Chan, Golub & LeVeque:

.. math::

    n = n_A + n_B,\quad \delta = \bar x_B - \bar x_A,\quad
    \bar x = \bar x_A + \delta\, \frac{n_B}{n},\quad
    M_2 = M_{2,A} + M_{2,B} + \delta^2 \frac{n_A n_B}{n}.

The same formula merges two states (shards on different processes or GPUs), so any split of the
data and any association order give the one-pass result up to rounding. Deviations are always
taken from a mean, never from zero, so unlike the naive :math:`\sum x^2 - n \bar x^2` the variance
does not cancel away when the mean is large compared to the spread: the relative error of the
variance grows like :math:`(|\bar x| / \sigma)\,\epsilon` rather than :math:`(|\bar x| / \sigma)^2\,\epsilon`.
Values ``1e8 + N(0, 1)`` in float64 match ``numpy.var`` to about 1e-8 relative, where the naive formula
loses every digit.

References:
    Welford, B. P. (1962). Note on a method for calculating corrected sums of squares and products.
    Technometrics 4(3), 419-420.

    Chan, T. F., Golub, G. H. & LeVeque, R. J. (1983). Algorithms for computing the sample variance:
    analysis and recommendations. The American Statistician 37(3), 242-247.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["WelfordState"]

_STATE_KEYS = ("count", "mean", "m2", "min", "max", "rows")


def _as_shape(shape: int | Sequence[int] | torch.Size) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must have non-negative sizes, got {dims}")
    return dims


class WelfordState:
    r"""Elementwise running count, mean, :math:`M_2`, min and max over a batch axis.

    Cells are independent: each cell of ``shape`` has its own count, so masked (padded) entries
    simply do not count. Statistics live in ``dtype`` (float64 by default, recommended); counts are
    always float64 (exact for counts below :math:`2^{53}`, and they enter the merge formula as
    floating weights anyway).

    Args:
        shape: Shape of one sample (the cell grid), e.g. ``(S, S)``; ``()`` for a scalar.
        dtype: Floating dtype of mean, :math:`M_2`, min and max. Default float64.
        device: Device of the state tensors. Default: torch's current default device.

    Example:
        >>> import torch
        >>> st = WelfordState((2,))
        >>> st.update(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        >>> st.mean.tolist(), st.var.tolist(), st.total_count
        ([3.0, 4.0], [4.0, 4.0], 3)

    References:
        Welford (1962), Technometrics 4(3); Chan, Golub & LeVeque (1983), The American
        Statistician 37(3).
    """

    def __init__(
        self,
        shape: int | Sequence[int] | torch.Size,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ):
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype (float64 recommended), got {dtype!r}")
        self._shape = _as_shape(shape)
        self._dtype = dtype
        device = torch.device(device) if device is not None else torch.empty(0).device
        self._count = torch.zeros(self._shape, dtype=torch.float64, device=device)
        self._mean = torch.zeros(self._shape, dtype=dtype, device=device)
        self._m2 = torch.zeros(self._shape, dtype=dtype, device=device)
        # +inf / -inf where count is 0, so min/max merges need no special case.
        self._min = torch.full(self._shape, float("inf"), dtype=dtype, device=device)
        self._max = torch.full(self._shape, float("-inf"), dtype=dtype, device=device)
        self._rows = 0

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample (the cell grid)."""
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of mean, m2, min and max (counts are always float64)."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Device of the state tensors."""
        return self._count.device

    @property
    def total_count(self) -> int:
        """Number of rows (samples, masked or not) passed to :meth:`update` so far, over all merges."""
        return self._rows

    @property
    def count(self) -> Tensor:
        """Number of valid values per cell, ``shape``, float64 (integer-valued; a copy)."""
        return self._count.clone()

    @property
    def m2(self) -> Tensor:
        r"""Sum of squared deviations from the mean per cell, :math:`M_2`, ``shape``, ``dtype``."""
        return self._m2.clone()

    @property
    def mean(self) -> Tensor:
        """Mean per cell, ``shape``, ``dtype``; NaN where the count is 0."""
        return torch.where(self._count > 0, self._mean, self._nan())

    @property
    def var(self) -> Tensor:
        r"""Unbiased (Bessel) variance :math:`M_2 / (n - 1)` per cell; NaN where the count is below 2."""
        n = self._count.to(self._dtype)
        return torch.where(self._count >= 2, self._m2 / (n - 1).clamp_min(1), self._nan())

    @property
    def std(self) -> Tensor:
        """Unbiased (Bessel) standard deviation per cell; NaN where the count is below 2."""
        return self.var.sqrt()

    @property
    def sem(self) -> Tensor:
        r"""Standard error of the mean :math:`s/\sqrt{n}` per cell; NaN where the count is below 2."""
        return self.std / self._count.to(self._dtype).sqrt()

    @property
    def cv(self) -> Tensor:
        """Coefficient of variation ``std / |mean|`` per cell; NaN where the count is below 2 or mean is 0."""
        abs_mean = self._mean.abs()
        return torch.where(abs_mean > 0, self.std / abs_mean, self._nan())

    @property
    def min(self) -> Tensor:
        """Minimum per cell, ``shape``, ``dtype``; NaN where the count is 0."""
        return torch.where(self._count > 0, self._min, self._nan())

    @property
    def max(self) -> Tensor:
        """Maximum per cell, ``shape``, ``dtype``; NaN where the count is 0."""
        return torch.where(self._count > 0, self._max, self._nan())

    def _nan(self) -> Tensor:
        return torch.tensor(float("nan"), dtype=self._dtype, device=self.device)

    # ------------------------------------------------------------------ updates
    def update(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Fold a batch of samples into the state.

        Args:
            x: Values ``[N, *shape]``, any real dtype (converted to the state's dtype and device).
            mask: Optional bool ``[N, *shape]`` or broadcastable to it (standard broadcasting, aligned
                on the trailing dimensions); True marks a valid value. Masked values are ignored,
                whatever they are (NaN padding is fine).

        Raises:
            TypeError: If ``x`` is not a real tensor or ``mask`` is not bool.
            ValueError: If ``x`` does not have shape ``[N, *shape]``, the mask does not broadcast, or an
                unmasked value is NaN or infinite.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"x must be a real floating or integer tensor, got dtype {x.dtype}")
        if x.dim() != len(self._shape) + 1 or tuple(x.shape[1:]) != self._shape:
            raise ValueError(
                f"x must have shape [{', '.join(['N', *map(str, self._shape)])}] (a batch of samples of "
                f"shape {list(self._shape)}), got {list(x.shape)}"
            )
        n_rows = x.shape[0]
        if n_rows == 0:
            return
        x = x.detach().to(device=self.device, dtype=self._dtype)
        if mask is None:
            valid = None
        else:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
                raise TypeError(f"mask must be a bool tensor (True = valid), got {got}")
            try:
                valid = torch.broadcast_to(mask.to(self.device), x.shape)
            except RuntimeError:
                raise ValueError(
                    f"mask of shape {list(mask.shape)} does not broadcast to x's shape {list(x.shape)}"
                ) from None

        finite = torch.isfinite(x)
        bad = ~finite if valid is None else valid & ~finite
        n_bad = int(bad.sum())
        if n_bad:
            n_cells = int(bad.any(0).sum())
            raise ValueError(
                f"x has {n_bad} unmasked non-finite value(s) (NaN or inf) in {n_cells} of "
                f"{max(1, bad[0].numel())} cell(s); mask them out (mask=False) or remove them"
            )

        if valid is None:
            n_b = torch.full(self._shape, float(n_rows), dtype=torch.float64, device=self.device)
            mean_b = x.mean(0)
            dev = x - mean_b
            xmin, xmax = x.amin(0), x.amax(0)
        else:
            n_b = valid.sum(0, dtype=torch.float64)
            n_safe = n_b.clamp_min(1).to(self._dtype)
            mean_b = torch.where(valid, x, 0).sum(0) / n_safe
            dev = torch.where(valid, x - mean_b, 0)
            xmin = torch.where(valid, x, float("inf")).amin(0)
            xmax = torch.where(valid, x, float("-inf")).amax(0)
        # Corrected two-pass (Chan et al. 1983, eq. 1.7): the second term removes the rounding
        # error of the batch mean.
        dev_sum = dev.sum(0)
        n_b_dtype = n_b.clamp_min(1).to(self._dtype)
        m2_b = ((dev * dev).sum(0) - dev_sum * dev_sum / n_b_dtype).clamp_min(0)
        mean_b = mean_b + dev_sum / n_b_dtype
        self._merge_moments(n_b, mean_b, m2_b, xmin, xmax, n_rows)

    def _merge_moments(
        self, n_b: Tensor, mean_b: Tensor, m2_b: Tensor, min_b: Tensor, max_b: Tensor, rows: int
    ) -> None:
        """Chan, Golub & LeVeque's pairwise update; cells with ``n_b == 0`` stay bit-identical."""
        n_a = self._count
        n = n_a + n_b
        n_safe = n.clamp_min(1)
        w_b = (n_b / n_safe).to(self._dtype)  # 0 where n_b == 0, 1 where n_a == 0
        w_ab = (n_a * n_b / n_safe).to(self._dtype)
        delta = mean_b - self._mean
        self._mean = self._mean + delta * w_b
        self._m2 = self._m2 + m2_b + delta * delta * w_ab
        self._count = n
        self._min = torch.minimum(self._min, min_b)
        self._max = torch.maximum(self._max, max_b)
        self._rows += int(rows)

    def merge(self, other: WelfordState) -> WelfordState:
        """Merge another state into this one, in place (exact pairwise formula; merging an empty state
        changes nothing).

        Args:
            other: A state with the same ``shape`` and ``dtype`` (moved to this state's device if needed).

        Returns:
            ``self``.

        Raises:
            TypeError: If ``other`` is not a :class:`WelfordState`.
            ValueError: If shapes or dtypes differ.
        """
        if not isinstance(other, WelfordState):
            raise TypeError(f"can only merge a WelfordState, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(
                f"cannot merge states of different shapes: expected {self.shape}, got {other.shape}"
            )
        if other.dtype != self.dtype:
            raise ValueError(
                f"cannot merge states of different dtypes: expected {self.dtype}, got {other.dtype}"
            )
        moments = (other._count, other._mean, other._m2, other._min, other._max)
        self._merge_moments(*(t.to(self.device) for t in moments), other._rows)
        return self

    @classmethod
    def merge_all(cls, states: Iterable[WelfordState]) -> WelfordState:
        """A new state equal to merging all ``states`` (none of them is modified).

        Raises:
            ValueError: If ``states`` is empty, or shapes/dtypes differ.
        """
        states = list(states)
        if not states:
            raise ValueError("merge_all needs at least one WelfordState")
        out = states[0].clone()
        for s in states[1:]:
            out.merge(s)
        return out

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Tensor]:
        """The state as tensors only (safetensors-compatible), each a contiguous copy.

        Returns:
            ``count`` (float64), ``mean``, ``m2``, ``min`` (+inf where count is 0), ``max`` (-inf where
            count is 0), all of ``shape``, and ``rows``: 0-d int64 tensor, :attr:`total_count`.
        """
        return {
            "count": self._count.clone().contiguous(),
            "mean": self._mean.clone().contiguous(),
            "m2": self._m2.clone().contiguous(),
            "min": self._min.clone().contiguous(),
            "max": self._max.clone().contiguous(),
            "rows": torch.tensor(self._rows, dtype=torch.int64),
        }

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Replace this state with one produced by :meth:`state_dict` (values cast to this state's dtype
        and moved to its device).

        Raises:
            ValueError: On missing or unexpected keys, wrong shapes, non-floating statistics, negative or
                non-integer counts, negative ``m2`` or a bad ``rows`` entry.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of tensors, got {type(state).__name__}")
        missing = [k for k in _STATE_KEYS if k not in state]
        extra = [k for k in state if k not in _STATE_KEYS]
        if missing or extra:
            raise ValueError(
                f"not a WelfordState state_dict: missing keys {missing}, unexpected keys {extra}; "
                f"expected exactly {list(_STATE_KEYS)}"
            )
        for k in _STATE_KEYS:
            if not isinstance(state[k], Tensor):
                raise TypeError(f"state[{k!r}] must be a torch.Tensor, got {type(state[k]).__name__}")
        for k in _STATE_KEYS[:5]:
            t = state[k]
            if tuple(t.shape) != self._shape:
                raise ValueError(f"state[{k!r}] has shape {list(t.shape)}, expected {list(self._shape)}")
            if not t.dtype.is_floating_point:
                raise ValueError(f"state[{k!r}] must be floating point, got {t.dtype}")
        rows = state["rows"]
        if rows.numel() != 1 or rows.dtype.is_floating_point or rows.dtype == torch.bool or int(rows) < 0:
            raise ValueError(f"state['rows'] must be one non-negative integer, got {rows!r}")
        d = self.device
        count = state["count"].to(device=d, dtype=torch.float64)
        if not bool((torch.isfinite(count) & (count >= 0) & (count == count.round())).all()):
            raise ValueError("state['count'] must hold finite non-negative integers")
        m2 = state["m2"].to(device=d, dtype=self._dtype)
        if bool((m2 < 0).any()) or bool(torch.isnan(m2).any()):
            raise ValueError("state['m2'] must be non-negative")
        self._count = count.clone()
        self._mean = state["mean"].to(device=d, dtype=self._dtype).clone()
        self._m2 = m2.clone()
        self._min = state["min"].to(device=d, dtype=self._dtype).clone()
        self._max = state["max"].to(device=d, dtype=self._dtype).clone()
        self._rows = int(rows)

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, Tensor], device: torch.device | str | None = None
    ) -> WelfordState:
        """Build a state from :meth:`state_dict` output; shape and dtype are taken from ``state['mean']``."""
        if not isinstance(state, Mapping) or not isinstance(state.get("mean"), Tensor):
            raise ValueError("not a WelfordState state_dict: no tensor under key 'mean'")
        mean = state["mean"]
        if not mean.dtype.is_floating_point:
            raise ValueError(f"state['mean'] must be floating point, got {mean.dtype}")
        out = cls(tuple(mean.shape), dtype=mean.dtype, device=device if device is not None else mean.device)
        out.load_state_dict(state)
        return out

    def to_flat(self) -> Tensor:
        """The whole state as one float64 CPU vector, e.g. to send it through one collective.

        Layout: ``count``, ``mean``, ``m2``, ``min``, ``max`` flattened (in that order), then ``rows``;
        the casts are exact for float32 and float64 statistics and for counts below :math:`2^{53}`.
        :meth:`from_flat` is the inverse.

        Returns:
            ``[5·numel + 1]`` float64 on the CPU, where ``numel`` is the number of cells of :attr:`shape`.
        """
        parts = [t.reshape(-1).to(torch.float64).cpu() for t in (self._count, self._mean, self._m2, self._min,
                                                                self._max)]
        return torch.cat([*parts, torch.tensor([self._rows], dtype=torch.int64).to(torch.float64)])

    @classmethod
    def from_flat(
        cls,
        flat: Tensor,
        shape: int | Sequence[int] | torch.Size,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> WelfordState:
        """Rebuild a state from :meth:`to_flat` output.

        Args:
            flat: ``[5·numel + 1]`` vector as :meth:`to_flat` returns it (any floating dtype and device).
            shape: Cell grid of the state.
            dtype: Dtype of the statistics (counts are float64 regardless).
            device: Device of the new state; default: that of ``flat``.

        Returns:
            A new state (checked as :meth:`load_state_dict` checks).

        Raises:
            ValueError: If ``flat`` is not a vector of ``5·numel + 1`` entries, or holds an invalid state.
        """
        shape = _as_shape(shape)
        numel = 1
        for n in shape:
            numel *= n
        if not isinstance(flat, Tensor) or flat.ndim != 1 or flat.numel() != 5 * numel + 1:
            got = list(flat.shape) if isinstance(flat, Tensor) else type(flat).__name__
            raise ValueError(f"a flat WelfordState of shape {list(shape)} has {5 * numel + 1} entries, got {got}")
        pieces = flat[:-1].reshape(5, *shape)
        state = {k: piece.to(torch.float64 if k == "count" else dtype)
                 for k, piece in zip(_STATE_KEYS[:5], pieces, strict=True)}
        state["rows"] = flat[-1].to(torch.int64)
        return cls.from_state_dict(state, device=device if device is not None else flat.device)

    def grown(self, size: int) -> WelfordState:
        """This state on the larger square cell grid ``[..., size, size]``: the new cells are empty.

        For statistics over position pairs ``[S, S]`` of samples of different lengths (e.g. one per
        process): grown to a common ``size``, they merge cell by cell. New cells hold count 0, mean 0,
        m2 0, min +inf and max -inf, as cells that never saw a value do.

        Args:
            size: New length of each of the last two axes, at least the current one.

        Returns:
            A new state (a copy when ``size`` equals the current length); :attr:`total_count` is kept.

        Raises:
            ValueError: If the last two axes are not square, or ``size`` is not an int at least their length.
        """
        if len(self._shape) < 2 or self._shape[-1] != self._shape[-2]:
            raise ValueError(f"grown needs a square cell grid [..., S, S], this state has shape {list(self._shape)}")
        if isinstance(size, bool) or not isinstance(size, int) or size < self._shape[-1]:
            raise ValueError(f"size must be an int >= {self._shape[-1]} (the current grid), got {size!r}")
        pad = (0, size - self._shape[-1], 0, size - self._shape[-1])
        out = WelfordState.__new__(WelfordState)
        out._shape, out._dtype, out._rows = (*self._shape[:-2], size, size), self._dtype, self._rows
        out._count = F.pad(self._count, pad, value=0.0)
        out._mean = F.pad(self._mean, pad, value=0.0)
        out._m2 = F.pad(self._m2, pad, value=0.0)
        out._min = F.pad(self._min, pad, value=float("inf"))
        out._max = F.pad(self._max, pad, value=float("-inf"))
        return out

    def clone(self) -> WelfordState:
        """An independent copy."""
        out = WelfordState.__new__(WelfordState)
        out._shape, out._dtype, out._rows = self._shape, self._dtype, self._rows
        out._count, out._mean, out._m2 = self._count.clone(), self._mean.clone(), self._m2.clone()
        out._min, out._max = self._min.clone(), self._max.clone()
        return out

    def to(self, device: torch.device | str) -> WelfordState:
        """This state on ``device``: ``self`` if it is already there, else a copy (like ``Tensor.to``)."""
        device = torch.device(device)
        if device == self.device:
            return self
        out = self.clone()
        for name in ("_count", "_mean", "_m2", "_min", "_max"):
            setattr(out, name, getattr(out, name).to(device))
        return out

    def __repr__(self) -> str:
        return (
            f"WelfordState(shape={self._shape}, dtype={self._dtype}, device={self.device}, rows={self._rows})"
        )
