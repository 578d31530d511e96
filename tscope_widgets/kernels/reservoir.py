"""``SampleReservoir``: a bounded uniform sample of per-sample sensitivity maps, for drill-down.

Population statistics (:class:`~tscope_widgets.kernels.welford.WelfordState`) say what is typical;
a view that lets a user click a cell and see *which* samples produced it needs some of the samples
themselves. Keeping all of them costs ``N * S^2`` per layer, so the reservoir keeps a uniform random
subset of fixed size ``C`` instead: after ``n`` samples, every one of them is in the reservoir with
probability ``min(1, C / n)``.

Reference:
    Vitter, J. S. (1985). Random sampling with a reservoir. ACM Trans. Math. Softw. 11(1), 37-57
    (algorithm R).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Layer = int | str


def set_generator_state(generator: torch.Generator, state: Tensor, where: str) -> None:
    """Set a CPU generator's state from a checkpoint, refusing a malformed one.

    Args:
        generator: The generator to set.
        state: A state from ``torch.Generator().get_state()``: ``uint8`` of its shape.
        where: What the state is (the checkpoint field), for the message.

    Raises:
        ValueError: For a state of another dtype or shape, or one torch refuses, naming ``where``.
    """
    want = torch.Generator().get_state()
    if not isinstance(state, Tensor) or state.dtype != torch.uint8 or tuple(state.shape) != tuple(want.shape):
        got = f"{state.dtype} {list(state.shape)}" if isinstance(state, Tensor) else type(state).__name__
        raise ValueError(f"{where}: a CPU generator state is uint8 {list(want.shape)}, got {got}")
    try:
        generator.set_state(state.to("cpu").clone())
    except RuntimeError as err:
        raise ValueError(f"{where}: not a valid generator state ({err})") from None


class SampleReservoir:
    """Uniform sample of at most ``capacity`` samples with their token ids, masks and maps.

    Algorithm R, vectorised per batch: sample number ``t`` (0-based, counted over the whole data
    set) fills slot ``t`` while ``t < C``; afterwards it draws ``r`` uniform in ``{0, ..., t}`` and
    replaces slot ``r`` if ``r < C``. The draws of a whole batch happen at once; when two samples of
    one batch pick the same slot the later one wins, exactly as in the sequential algorithm. Only
    the accepted rows are written.

    Everything lives on the CPU. Slots that are not filled yet hold ``sample_index = -1``, token
    id 0, mask ``False`` and NaN maps; positions past a sample's length are stored the same way.

    Attributes:
        capacity: ``C``, the most samples kept.
        seq_len: ``S``, the stored length; shorter samples are padded.
        layers: Layer labels of ``maps``.
        input_ids: ``[C, S]`` int64 token ids.
        mask: ``[C, S]`` bool, True at real (non-padding) tokens.
        maps: ``{layer: [C, S, S]}`` float32 per-sample sensitivity maps (NaN at padding).
        sample_index: ``[C]`` int64 position of each kept sample in the data set (-1: empty slot).
        seen: Number of samples offered so far.
        generator: CPU ``torch.Generator`` of the acceptance draws.

    Example:
        >>> r = SampleReservoir(capacity=2, seq_len=3, layers=[0], seed=0)
        >>> ids = torch.arange(12).view(4, 3)
        >>> r.add(ids, torch.ones(4, 3, dtype=torch.bool), {0: torch.zeros(4, 3, 3)})
        >>> r.size, r.seen
        (2, 4)
    """

    def __init__(self, capacity: int, seq_len: int, layers: Sequence[Layer], seed: int | None = 0):
        """Empty reservoir.

        Args:
            capacity: Most samples kept, ``>= 0`` (0 keeps none).
            seq_len: Stored sequence length ``S >= 1``.
            layers: Labels of the maps kept per sample (canonical layer labels).
            seed: Seed of the acceptance draws; ``None`` seeds from the global RNG.

        Raises:
            ValueError: for a negative capacity, ``seq_len < 1`` or no layers.
        """
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"reservoir capacity must be an int >= 0, got {capacity!r}")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"reservoir seq_len must be an int >= 1, got {seq_len!r}")
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a reservoir needs at least one layer")
        self.capacity = capacity
        self.seq_len = seq_len
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        C, S = capacity, seq_len
        self.input_ids = torch.zeros(C, S, dtype=torch.long)
        self.mask = torch.zeros(C, S, dtype=torch.bool)
        self.maps = {layer: torch.full((C, S, S), float("nan"), dtype=torch.float32) for layer in self.layers}
        self.sample_index = torch.full((C,), -1, dtype=torch.long)
        self.seen = 0

    @property
    def size(self) -> int:
        """Number of filled slots, ``min(capacity, seen)``."""
        return min(self.capacity, self.seen)

    def add(self, input_ids: Tensor, mask: Tensor | None, maps: Mapping[Layer, Tensor]) -> None:
        """Offer the next ``B`` samples of the stream.

        Args:
            input_ids: ``[B, S_b]`` integer token ids, ``S_b <= seq_len``.
            mask: ``[B, S_b]`` (bool or 0/1) True at real tokens, or ``None`` (no padding).
            maps: ``{layer: [B, S_b, S_b]}`` per-sample maps for every layer of the reservoir
                (any float dtype and device; stored as float32 on the CPU).

        Raises:
            ValueError: for inconsistent shapes, a too long batch or missing layers.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape [batch, seq], got {tuple(input_ids.shape)}")
        B, S_b = input_ids.shape
        if S_b > self.seq_len:
            raise ValueError(f"batch length {S_b} exceeds the reservoir's seq_len {self.seq_len}")
        if mask is None:
            mask = torch.ones(B, S_b, dtype=torch.bool)
        if mask.shape != input_ids.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
        missing = [layer for layer in self.layers if layer not in maps]
        if missing:
            raise ValueError(f"maps lack layers {missing}; the reservoir keeps {self.layers}")
        for layer in self.layers:
            if maps[layer].shape != (B, S_b, S_b):
                raise ValueError(
                    f"maps[{layer!r}] has shape {tuple(maps[layer].shape)}, expected {(B, S_b, S_b)}"
                )

        slots, rows = self._accepted(B)
        self.seen += B
        if slots.numel() == 0:
            return
        rows_dev = rows.to(input_ids.device)
        self.input_ids[slots] = 0
        self.input_ids[slots, :S_b] = input_ids[rows_dev].to("cpu", torch.long)
        self.mask[slots] = False
        self.mask[slots, :S_b] = mask[rows.to(mask.device)].to("cpu", torch.bool)
        self.sample_index[slots] = self.seen - B + rows
        for layer in self.layers:
            m = maps[layer]
            self.maps[layer][slots] = float("nan")
            self.maps[layer][slots, :S_b, :S_b] = m[rows.to(m.device)].to("cpu", torch.float32)

    def _accepted(self, B: int) -> tuple[Tensor, Tensor]:
        """Slots ``[A]`` written by the next ``B`` samples and the batch rows ``[A]`` that win them."""
        C = self.capacity
        t = self.seen + torch.arange(B)  # stream index of every sample of the batch
        fills = t < C
        slot = torch.where(fills, t, C)  # C = rejected
        late = ~fills
        if late.any():
            u = torch.rand(int(late.sum()), generator=self.generator, dtype=torch.float64)
            r = torch.minimum((u * (t[late] + 1).double()).long(), t[late])  # uniform in {0..t}
            slot[late] = torch.where(r < C, r, C)
        accepted = slot < C
        # Later samples overwrite earlier ones that drew the same slot: keep the largest row per slot.
        winner = torch.full((C + 1,), -1, dtype=torch.long)
        winner.scatter_reduce_(0, slot[accepted], torch.arange(B)[accepted], reduce="amax")
        slots = (winner[:C] >= 0).nonzero().squeeze(1)
        return slots, winner[slots]

    # ----- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: ``input_ids``, ``mask``, ``sample_index``, ``maps.<layer>``, ``seen``,
        ``capacity``, ``seq_len`` (int64 scalars) and ``rng_state`` (uint8, the generator state)."""
        out = {
            "input_ids": self.input_ids.clone(),
            "mask": self.mask.clone(),
            "sample_index": self.sample_index.clone(),
            "seen": torch.tensor(self.seen, dtype=torch.long),
            "capacity": torch.tensor(self.capacity, dtype=torch.long),
            "seq_len": torch.tensor(self.seq_len, dtype=torch.long),
            "rng_state": self.generator.get_state(),
        }
        out.update({f"maps.{layer}": m.clone() for layer, m in self.maps.items()})
        return out

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`state_dict` output (capacity, seq_len and layers must match).

        Raises:
            ValueError: naming a missing key or a mismatched size.
        """
        expected = ["input_ids", "mask", "sample_index", "seen", "capacity", "seq_len", "rng_state"]
        expected += [f"maps.{layer}" for layer in self.layers]
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"reservoir state lacks {missing}")
        for name, have in (("capacity", self.capacity), ("seq_len", self.seq_len)):
            if int(state[name]) != have:
                raise ValueError(f"reservoir state has {name}={int(state[name])}, this reservoir {have}")
        C, S = self.capacity, self.seq_len
        shapes = {"input_ids": (C, S), "mask": (C, S), "sample_index": (C,)}
        shapes.update({f"maps.{layer}": (C, S, S) for layer in self.layers})
        for key, shape in shapes.items():
            if tuple(state[key].shape) != shape:
                raise ValueError(
                    f"reservoir state {key!r} has shape {tuple(state[key].shape)}, expected {shape}"
                )
        self.input_ids = state["input_ids"].to("cpu", torch.long).clone()
        self.mask = state["mask"].to("cpu", torch.bool).clone()
        self.sample_index = state["sample_index"].to("cpu", torch.long).clone()
        self.maps = {layer: state[f"maps.{layer}"].to("cpu", torch.float32).clone() for layer in self.layers}
        seen = state["seen"]
        if not (isinstance(seen, Tensor) and seen.numel() == 1 and not seen.is_floating_point() and int(seen) >= 0):
            shown = seen.tolist() if isinstance(seen, Tensor) else seen
            raise ValueError(
                f"reservoir.seen={shown}: the reservoir state 'seen' must be one integer >= 0 (the samples "
                "offered so far); the state is damaged: start a new run"
            )
        set_generator_state(self.generator, state["rng_state"], "reservoir state 'rng_state'")
        self.seen = int(seen)

    def grown(self, seq_len: int) -> SampleReservoir:
        """A copy storing ``seq_len`` positions; the new positions are empty, as for samples shorter than that.

        New positions hold token id 0, mask False and NaN maps; samples, their indices, ``seen`` and the
        generator state are kept. For reservoirs of samples of different lengths (e.g. one per process)
        that must share one shape.

        Args:
            seq_len: New stored length, at least :attr:`seq_len`.

        Returns:
            A new reservoir (a plain copy when ``seq_len`` equals :attr:`seq_len`).

        Raises:
            ValueError: If ``seq_len`` is not an int at least :attr:`seq_len`.
        """
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < self.seq_len:
            raise ValueError(f"seq_len must be an int >= {self.seq_len} (the stored length), got {seq_len!r}")
        sd = self.state_dict()
        pad = seq_len - self.seq_len
        if pad:
            sd["input_ids"] = F.pad(sd["input_ids"], (0, pad), value=0)
            sd["mask"] = F.pad(sd["mask"], (0, pad), value=False)
            sd["seq_len"] = torch.tensor(seq_len, dtype=torch.long)
            for layer in self.layers:
                sd[f"maps.{layer}"] = F.pad(sd[f"maps.{layer}"], (0, pad, 0, pad), value=float("nan"))
        out = SampleReservoir(self.capacity, seq_len, self.layers, seed=0)
        out.load_state_dict(sd)
        return out

    def copy(self) -> SampleReservoir:
        """An independent copy (tensors and generator state cloned)."""
        other = SampleReservoir(self.capacity, self.seq_len, self.layers, seed=0)
        other.load_state_dict(self.state_dict())
        return other

    def __repr__(self) -> str:
        return f"SampleReservoir(size={self.size}/{self.capacity}, seen={self.seen}, seq_len={self.seq_len})"
