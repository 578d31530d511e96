r"""Statistics over several processes with ``torch.distributed``: shard the data, merge exactly.

Every kernel statistic here is a :class:`~tscope_widgets.kernels.welford.WelfordState`, whose
pairwise merge (Chan, Golub & LeVeque 1983) is exact and associative in exact arithmetic. So a
data set can be split over ``W`` processes, each process accumulates its shard alone (no
communication while it works), and one all-gather at the end yields the one-pass statistics:

1. :func:`shard` gives rank ``r`` the samples ``r, r + W, r + 2W, ...`` (see :func:`shard_indices`);
2. each rank runs the kernel on its shard (:func:`iter_sensitivity_distributed` does this for
   :func:`~tscope_widgets.kernels.sensitivity.iter_sensitivity`);
3. :func:`all_merge_welford` all-gathers every rank's state tensors and merges them in rank order
   on every rank, so all ranks end with bit-identical statistics. Counts, minima and maxima equal
   a single pass exactly; means and variances equal it up to rounding (in float64 about 1e-15
   relative, times ``|mean| / std`` for the variance). (Given the same per-sample values: a kernel
   that computes a batch at once may round a sample's value differently in another batch, as BLAS
   blocks by batch shape, and shards make other batches than one pass.)

Under ``torchrun`` call :func:`init_from_env` once at start-up; without torchrun's environment
everything runs as a world of one process and the collectives are skipped.

A failure on one rank must not leave the others waiting in a collective: :func:`check_all_ranks` lets
every rank report how a step went and raises :class:`RankFailure` on every rank if any failed (the
merge at the end of :func:`iter_sensitivity_distributed` does the same). What every rank must hold
alike (a model trained on rank 0, the data) is sent with :func:`broadcast_module_` and checked with
:func:`check_same_on_every_rank`.

Example (``torchrun --nproc-per-node 2 script.py``)::

    from tscope_widgets.distributed import init_from_env, sensitivity_statistics

    ctx = init_from_env()  # gloo on CPU, nccl when CUDA is available
    snap = sensitivity_statistics(model, input_ids, layers="all", batch_size=8)
    if ctx.is_main:
        print(snap.stats[-1].mean)  # the same on every rank

References:
    Chan, T. F., Golub, G. H. & LeVeque, R. J. (1983). Algorithms for computing the sample variance:
    analysis and recommendations. The American Statistician 37(3), 242-247.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .kernels.reservoir import SampleReservoir
from .kernels.sensitivity import SensitivitySnapshot, iter_sensitivity
from .kernels.welford import WelfordState
from .models.adapter import LayerDict

__all__ = [
    "DistContext",
    "DistributedSensitivitySnapshot",
    "RankFailure",
    "all_merge_welford",
    "broadcast_json",
    "broadcast_module_",
    "check_all_ranks",
    "check_same_on_every_rank",
    "context",
    "init_from_env",
    "is_distributed",
    "iter_sensitivity_distributed",
    "rank",
    "rank_seed",
    "sensitivity_statistics",
    "shard",
    "shard_indices",
    "world_size",
]

K = TypeVar("K")

# What torchrun exports to every process it starts (LOCAL_RANK too, which defaults to 0 here).
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_WELFORD_KEYS = ("count", "mean", "m2", "min", "max")


# ======================================================================================
# process group
# ======================================================================================
@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the process group.

    Attributes:
        rank: This process's rank, ``0 <= rank < world_size``.
        world_size: Number of processes (1 without ``torch.distributed``).
        local_rank: Rank on this machine (selects the GPU with nccl).
        backend: ``"gloo"``, ``"nccl"``, ... or ``None`` when no process group is initialised.
        device: Where this process should put its model and tensors.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that prints, writes files and shows progress."""
        return self.rank == 0


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes in the default process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def context() -> DistContext:
    """The :class:`DistContext` of the current process group (a world of one without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = str(dist.get_backend())
    return DistContext(rank(), world_size(), local_rank, backend, _comm_device())


def init_from_env(
    backend: str | None = None,
    *,
    device: torch.device | str | None = None,
    timeout: float | datetime.timedelta | None = None,
) -> DistContext:
    """Initialise the default process group from ``torchrun``'s environment, if it is there.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (and ``LOCAL_RANK``). Without
    them this is a no-op returning a world of one; when a group is already initialised it returns
    its context unchanged.

    Args:
        backend: ``None`` picks ``"nccl"`` when ``device`` is a CUDA device and ``"gloo"`` otherwise;
            any backend name ``torch.distributed`` knows is passed through.
        device: Where this process's tensors will live. ``None``: ``cuda:<LOCAL_RANK>`` when CUDA is
            available, else the CPU. With nccl the current CUDA device is set to ``cuda:<LOCAL_RANK>``.
        timeout: Seconds (or a ``timedelta``) a collective waits for the other ranks before it raises
            instead of hanging; ``None``: torch's default (30 minutes for gloo, 10 for nccl).

    Returns:
        The :class:`DistContext` of this process.

    Raises:
        ValueError: when only some of the variables are set, or they are not valid integers/ranks.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    present = [name for name in TORCHRUN_ENV if name in os.environ]
    if not present:
        cpu_or_given = torch.device(device) if device is not None else torch.device("cpu")
        return DistContext(device=cpu_or_given)
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise ValueError(f"torch.distributed environment is incomplete: {present} are set but {missing} are "
                         "not; launch with torchrun, or set all of them (or none)")
    if not dist.is_available():
        raise RuntimeError("torchrun's environment is set but this torch build has no torch.distributed")
    ranks = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        try:
            ranks[name] = int(os.environ.get(name, "0"))
        except ValueError:
            raise ValueError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None
    if timeout is not None and not isinstance(timeout, datetime.timedelta):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        timeout = datetime.timedelta(seconds=timeout)
    r, w, local_rank = ranks["RANK"], ranks["WORLD_SIZE"], ranks["LOCAL_RANK"]
    if w < 1 or not 0 <= r < w or local_rank < 0:
        raise ValueError(f"need WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0; got "
                         f"RANK={r}, WORLD_SIZE={w}, LOCAL_RANK={local_rank}")
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", rank=r, world_size=w, timeout=timeout)
    return DistContext(r, w, local_rank, str(dist.get_backend()), device)


def _comm_device() -> torch.device:
    """Where collective buffers must live: the current GPU for nccl, else the CPU."""
    if str(dist.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ======================================================================================
# sharding
# ======================================================================================
def _check_rank(rank_: int | None, world_size_: int | None) -> tuple[int, int]:
    r = rank() if rank_ is None else rank_
    w = world_size() if world_size_ is None else world_size_
    for name, value in (("rank", r), ("world_size", w)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={r}, world_size={w}")
    return r, w


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> Tensor:
    """Indices of the samples that ``rank`` processes: ``rank, rank + W, rank + 2W, ... < n``.

    A strided split, as in ``torch.utils.data.distributed.DistributedSampler`` but without its
    padding (which repeats samples to even out the shards, and would count them twice in a
    statistic). Every index in ``[0, n)`` goes to exactly one rank; shard sizes differ by at most
    one (the first ``n mod W`` ranks get one more). Strided rather than contiguous because data sets
    are often ordered (by length, source, difficulty): a stride spreads every part of the data, and so
    the work, over all ranks alike, and local sample ``k`` of rank ``r`` is global sample ``r + kW``.

    Args:
        n: Number of samples, ``>= 0``.
        rank: This process's rank; ``None`` = the current process group's (0 without one).
        world_size: ``W``, number of processes; ``None`` = the current process group's.

    Returns:
        int64 indices ``[ceil((n - rank) / W)]``, increasing.

    Raises:
        TypeError: non-integer arguments.
        ValueError: ``n < 0``, ``world_size < 1`` or a rank outside ``[0, world_size)``.

    Example:
        >>> shard_indices(7, 1, 3).tolist()
        [1, 4]
    """
    r, w = _check_rank(rank, world_size)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return torch.arange(r, max(r, n), w, dtype=torch.int64)


def _num_samples(data) -> int:
    """Length of the sample axis of data :func:`shard` accepts; raises for anything else."""
    if isinstance(data, Tensor):
        if data.ndim == 0:
            raise ValueError("cannot shard a 0-d tensor: data needs a leading sample axis [N, ...]")
        return data.shape[0]
    if isinstance(data, tuple) and data and all(isinstance(t, Tensor) for t in data):
        parts = list(data)
    elif isinstance(data, Mapping):
        parts = list(data.values())
    elif isinstance(data, list):
        return len(data)
    else:
        raise TypeError(
            f"shard cannot split {type(data).__name__}: pass an id tensor [N, S], a tuple (input_ids, "
            "attention_mask), a dict of tensors or lists with a common first dimension, or a list of "
            "samples; shard an iterable of batches yourself (e.g. a DataLoader with a DistributedSampler)"
        )
    sizes = []
    for part in parts:
        if isinstance(part, Tensor) and part.ndim >= 1:
            sizes.append(part.shape[0])
        elif isinstance(part, list):
            sizes.append(len(part))
        else:
            raise TypeError(f"every entry of the data must be a tensor [N, ...] or a list of N samples, "
                            f"got {type(part).__name__}")
    if not sizes or len(set(sizes)) != 1:
        raise ValueError(f"the entries of the data must share their first dimension (samples), "
                         f"got sizes {sizes}")
    return sizes[0]


def shard(data, rank: int | None = None, world_size: int | None = None):
    """This rank's part of a data set, as selected by :func:`shard_indices`.

    Tensors are sliced with a step (``t[rank::W]``, a view, no copy), lists likewise.

    Args:
        data: An id tensor ``[N, S]`` (any tensor ``[N, ...]``), a tuple ``(input_ids, attention_mask)``
            of tensors, a dict whose values are tensors ``[N, ...]`` or lists of ``N`` samples (e.g.
            ``{"input_ids": ..., "attention_mask": ...}``), or a list of ``N`` samples (strings).
        rank: This process's rank; ``None`` = the current process group's.
        world_size: ``W``; ``None`` = the current process group's.

    Returns:
        The same kind of object holding samples ``rank, rank + W, ...`` (a dict keeps its type where it
        can be built from a plain dict, else becomes a plain dict).

    Raises:
        TypeError: unsupported data (e.g. a ``DataLoader``: shard it with a ``DistributedSampler``).
        ValueError: entries with different sample counts, or bad rank/world size.
    """
    r, w = _check_rank(rank, world_size)
    _num_samples(data)
    step = slice(r, None, w)
    if isinstance(data, (Tensor, list)):
        return data[step]
    if isinstance(data, tuple):
        return tuple(t[step] for t in data)
    out = {key: value[step] for key, value in data.items()}
    try:
        return type(data)(out)
    except TypeError:
        return out


# ======================================================================================
# merging Welford states
# ======================================================================================
def _all_gather_json(obj: Any, device: torch.device) -> list[Any]:
    """Every rank's ``obj`` (JSON-serialisable), in rank order. JSON, not pickle, on the wire."""
    payload = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    return [json.loads(bytes(g[:n].cpu().tolist()).decode()) for g, n in zip(gathered, lengths, strict=True)]


def _pack(state: WelfordState) -> Tensor:
    """``[5·numel + 1]`` float64: count, mean, m2, min, max flattened, then rows (exact below 2^53)."""
    sd = state.state_dict()
    parts = [sd[k].reshape(-1).to(torch.float64) for k in _WELFORD_KEYS]
    return torch.cat([*(p.cpu() for p in parts), sd["rows"].reshape(1).to(torch.float64)])


def _unpack(flat: Tensor, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> WelfordState:
    pieces = flat[:-1].reshape(5, *shape)
    sd = {k: piece.to(torch.float64 if k == "count" else dtype) for k, piece in zip(_WELFORD_KEYS, pieces,
                                                                                    strict=True)}
    sd["rows"] = flat[-1].to(torch.int64)
    return WelfordState.from_state_dict(sd, device=device)


def all_merge_welford(states: Mapping[K, WelfordState]) -> dict[K, WelfordState]:
    """Merge every rank's Welford states; every rank gets the same merged states.

    All ranks must call it with the same keys, in the same order, with the same shapes and dtypes
    (checked: a mismatch raises the same ValueError on every rank instead of hanging). Each rank's
    states are packed into one float64 buffer (casts to and from float64 are exact for float32 and
    float64 statistics and for counts below 2^53), one ``all_gather`` collects all buffers, and every
    rank merges them in rank order 0, 1, ..., W-1 with :meth:`WelfordState.merge` (Chan, Golub &
    LeVeque 1983). The same operations in the same order on every rank give bit-identical results.

    Exactness: ``count``, ``min``, ``max`` and ``total_count`` equal a single pass over all the
    data exactly; ``mean`` and ``var`` equal it up to rounding (the merge is exact in exact
    arithmetic; only the order of floating-point operations differs): in float64 about 1e-15 relative,
    times ``|mean| / std`` for the variance.

    Without an initialised multi-process group this returns copies of ``states``.

    Args:
        states: ``{key: WelfordState}`` of this rank, on any device (buffers travel on the CPU with
            gloo and on the current GPU with nccl).

    Returns:
        ``{key: WelfordState}``, new states on the devices of the inputs, in the order of ``states``.

    Raises:
        TypeError: when ``states`` is not a mapping of :class:`WelfordState`.
        ValueError: when the ranks' keys, shapes or dtypes differ (on every rank).

    References:
        Chan, Golub & LeVeque (1983), The American Statistician 37(3).
    """
    if not isinstance(states, Mapping):
        raise TypeError(f"states must be a mapping of WelfordState, got {type(states).__name__}")
    bad = [key for key, st in states.items() if not isinstance(st, WelfordState)]
    if bad:
        raise TypeError(f"states must hold WelfordState values; keys {bad!r} hold something else")
    if not is_distributed():
        return {key: st.clone() for key, st in states.items()}
    device = _comm_device()
    signature = [[repr(key), list(st.shape), str(st.dtype)] for key, st in states.items()]
    signatures = _all_gather_json(signature, device)
    for r, other in enumerate(signatures):
        if other != signatures[0]:
            raise ValueError(
                "all_merge_welford needs the same keys, shapes and dtypes, in the same order, on every rank; "
                f"rank 0 has {signatures[0]} (key, shape, dtype) but rank {r} has {other}"
            )
    if not states:
        return {}
    local = torch.cat([_pack(st) for st in states.values()]).to(device)
    gathered = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(gathered, local)
    per_rank = torch.stack(gathered).cpu()  # [W, P]
    out: dict[K, WelfordState] = {}
    offset = 0
    for key, st in states.items():
        width = 5 * math.prod(st.shape) + 1
        merged = _unpack(per_rank[0, offset:offset + width], st.shape, st.dtype, st.device)
        for r in range(1, per_rank.shape[0]):
            merged.merge(_unpack(per_rank[r, offset:offset + width], st.shape, st.dtype, st.device))
        out[key] = merged
        offset += width
    return out


# ======================================================================================
# failures, broadcasts and checks that every rank holds the same
# ======================================================================================
class RankFailure(RuntimeError):
    """Raised on the ranks of a collective step at which some rank failed, instead of a hang.

    Attributes:
        what: The step, e.g. ``"while preparing the data"``.
        failures: ``{rank: "ExceptionType: message"}`` of the ranks that failed, in rank order.
    """

    def __init__(self, what: str, failures: Mapping[int, str]):
        self.what, self.failures = what, dict(sorted(failures.items()))
        by_message: dict[str, list[int]] = {}
        for r, message in self.failures.items():
            by_message.setdefault(message, []).append(r)
        if len(by_message) == 1:
            detail = next(iter(by_message))
        else:
            detail = "; ".join(f"rank(s) {ranks}: {message}" for message, ranks in by_message.items())
        super().__init__(f"rank(s) {list(self.failures)} failed {what}: {detail}")


def _failure_text(error: BaseException | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"


def check_all_ranks(error: BaseException | None, what: str) -> None:
    """Collective: every rank says whether its part of a step failed; if any did, every rank raises.

    Call it on every rank after a step that may fail on some ranks only (reading a file, building a
    model), passing the exception caught there or ``None``; one all-gather of the messages (JSON)
    follows. Without it a rank that failed would leave the others waiting at their next collective.

    Args:
        error: This rank's exception, or ``None`` when its part succeeded.
        what: The step, for the message (``"while preparing the data"``).

    Raises:
        RankFailure: on every rank when any rank failed (raised ``from`` this rank's own error, if any);
            it names the failed ranks and their messages. Without a multi-process group: ``error``
            itself, if given.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    reports = _all_gather_json(_failure_text(error), _comm_device())
    failures = {r: report for r, report in enumerate(reports) if report is not None}
    if failures:
        raise RankFailure(what, failures) from error


def broadcast_json(obj: Any) -> Any:
    """Rank 0's ``obj`` (JSON-serialisable) on every rank; call it on every rank (the others' ``obj`` is ignored)."""
    if not is_distributed():
        return obj
    return _all_gather_json(obj if rank() == 0 else None, _comm_device())[0]


def broadcast_module_(module: torch.nn.Module) -> torch.nn.Module:
    """Overwrite every parameter and buffer of ``module`` in place with rank 0's; returns ``module``.

    Every rank must hold the same architecture (same parameters and buffers, shapes and dtypes, in
    the same order), e.g. built from a config that rank 0 sent with :func:`broadcast_json`. Values
    travel bit for bit (bool buffers as uint8, gloo has no bool).
    """
    if not is_distributed():
        return module
    device = _comm_device()
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            wire = (t.to(torch.uint8) if t.dtype == torch.bool else t.detach()).to(device).contiguous().clone()
            dist.broadcast(wire, src=0)
            t.copy_(wire.to(t.dtype))
    return module


def _digest(t: Tensor) -> str:
    """SHA-256 of a tensor's bytes (any dtype, device and layout)."""
    raw = t.detach().reshape(-1).contiguous().cpu().view(torch.uint8)
    return hashlib.sha256(raw.numpy()).hexdigest()


def check_same_on_every_rank(tensors: Mapping[str, Tensor], what: str) -> None:
    """Collective: check that every rank holds bit-identical ``tensors`` (a model's state dict, the data).

    Each rank hashes its tensors (SHA-256 of the bytes, with names, shapes and dtypes) and one
    all-gather of the digests (JSON) compares them; nothing else travels.

    Args:
        tensors: ``{name: tensor}``, e.g. ``dict(model.state_dict())``.
        what: What the tensors are, for the message (``"the model"``).

    Raises:
        ValueError: on every rank when some rank's tensors differ from rank 0's, naming the first
            differing tensor.
    """
    if not is_distributed():
        return
    signature = [[name, list(t.shape), str(t.dtype), _digest(t)] for name, t in tensors.items()]
    signatures = _all_gather_json(signature, _comm_device())
    for r, other in enumerate(signatures):
        if other == signatures[0]:
            continue
        names0, names = [s[0] for s in signatures[0]], [s[0] for s in other]
        if names != names0:
            where = f"its tensors are {names}, rank 0's {names0}"
        else:
            name = next(a[0] for a, b in zip(signatures[0], other, strict=True) if a != b)
            where = f"first at {name!r}"
        raise ValueError(f"{what} differs between rank 0 and rank {r} ({where}); every rank must analyse "
                         "the same one")


# ======================================================================================
# sensitivity over shards
# ======================================================================================
@dataclass
class DistributedSensitivitySnapshot(SensitivitySnapshot):
    """A :class:`SensitivitySnapshot` that knows which rank made it and whether it is merged.

    Local snapshots (``merged=False``) hold the statistics of this rank's shard: ``done``/``total``
    count this shard's samples and ``seed`` is the rank's :func:`rank_seed`. The final, merged
    snapshot (``merged=True``) holds the statistics of all ranks (identical on every rank), ``done``,
    ``total`` and ``batches`` summed over ranks, the run's base ``seed``, and rank 0's reservoir and
    probe generator state on every rank.

    Attributes:
        rank: The rank that yielded it.
        world_size: Number of processes of the run.
        merged: Whether ``stats`` covers every rank's shard.
    """

    rank: int = 0
    world_size: int = 1
    merged: bool = False

    def meta(self) -> dict[str, Any]:
        """:meth:`SensitivitySnapshot.meta` plus ``rank``, ``world_size`` and ``merged``."""
        out = super().meta()
        out.update(rank=self.rank, world_size=self.world_size, merged=self.merged)
        return out


def rank_seed(seed: int, rank_: int) -> int:
    """Seed of rank ``rank_``'s probe and reservoir generators: ``seed + rank·2³²``.

    Distinct per rank, so Hutchinson probes are independent across ranks (with one seed for all,
    every rank would reuse the same probe sequence on different samples), and rank 0 uses ``seed``
    itself, like a single-process run.
    """
    return seed + (rank_ << 32)


def iter_sensitivity_distributed(
    adapter,
    data,
    *,
    seed: int = 0,
    resume=None,
    sharded: bool = False,
    **kwargs,
) -> Iterator[DistributedSensitivitySnapshot]:
    """:func:`~tscope_widgets.kernels.sensitivity.iter_sensitivity` over this rank's shard, merged at the end.

    Yields this rank's local snapshot after every batch (``merged=False``, for a progress bar; no
    communication happens meanwhile), then, once the shard is done, one merged snapshot
    (``merged=True``) equal on every rank: statistics of all ranks merged with
    :func:`all_merge_welford`, so its ``stats`` equal a single-process run's (counts, minima and
    maxima exactly, means and variances to rounding; for ``method="exact"`` and ``"full"``, whose
    maps do not depend on the seed). Ranks whose longest sample is shorter than another rank's (text
    data, iterables of batches) have their cell grid extended with empty cells (count 0) first.

    The reservoir of the merged snapshot is rank 0's, sent to every rank: a uniform sample of rank
    0's shard rather than of the whole data set (gathering every rank's reservoir and re-sampling
    would cost ``W`` times the memory for a drill-down view). With ``sharded=False`` its
    ``sample_index`` is remapped to positions in the whole data set (local ``k`` -> ``k·W``).

    Every rank must run the generator to its end: the merge is a collective operation. If a rank
    fails while processing its shard, every rank raises at the merge instead of waiting forever: the
    failed rank its own error, the others :class:`RankFailure` with its message. An exception thrown
    into the generator (``gen.throw(exc)``, e.g. a checkpoint that could not be written) counts as a
    failure of this rank's shard in the same way.

    Args:
        adapter: Model or adapter, as for ``iter_sensitivity``; the same on every rank.
        data: The whole data set (the same on every rank), split with :func:`shard`; with
            ``sharded=True``, this rank's part already (e.g. a ``DataLoader`` over a
            ``DistributedSampler``; keep ``drop_last`` semantics in mind: padded samples count twice).
        seed: Base seed; rank ``r`` runs with :func:`rank_seed` ``(seed, r)``.
        resume: A checkpoint of a local snapshot of this rank from an earlier run with the same world
            size; merged snapshots cannot be resumed from.
        sharded: Whether ``data`` is already this rank's part.
        **kwargs: Passed to ``iter_sensitivity`` (``layers``, ``method``, ``batch_size``, ``max_seq_len``,
            ``tokenizer``, ``source``, ``probes``, ``chunk_size``, ``dtype``, ``mode``, ``reservoir_size``).

    Returns:
        A generator of :class:`DistributedSensitivitySnapshot`.

    Raises:
        ValueError: fewer samples than processes, a checkpoint of another rank, world size or a merged
            snapshot, plus everything ``iter_sensitivity`` raises; at the merge, :class:`RankFailure` on
            ranks whose peers failed.
        TypeError: data :func:`shard` cannot split (pass ``sharded=True`` with your own split).
    """
    r, w = rank(), world_size()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if resume is not None:
        _check_resume(resume, r, w)
    if not sharded:
        n = _num_samples(data)
        if n < w:
            raise ValueError(f"data has {n} sample(s) for {w} processes: every rank needs at least one "
                             "sample")
        data = shard(data, r, w)
    local = iter_sensitivity(adapter, data, seed=rank_seed(seed, r), resume=resume, **kwargs)
    return _run_and_merge(local, seed, r, w, remap_reservoir=not sharded)


def sensitivity_statistics(adapter, data, **kwargs) -> DistributedSensitivitySnapshot:
    """Run :func:`iter_sensitivity_distributed` to the end and return the merged snapshot.

    Takes the same arguments; call it on every rank.
    """
    last = deque(iter_sensitivity_distributed(adapter, data, **kwargs), maxlen=1)  # keeps one snapshot
    return last[0]


def _check_resume(resume, r: int, w: int) -> None:
    meta = getattr(resume, "meta", None)
    if not isinstance(meta, Mapping):
        raise TypeError(f"resume must be a Checkpoint with .tensors and .meta, got {type(resume).__name__}")
    if meta.get("merged"):
        raise ValueError("the resume checkpoint holds merged statistics of all ranks; resume each rank "
                         "from a checkpoint of its own local snapshots (merged=False)")
    if meta.get("rank", 0) != r or meta.get("world_size", 1) != w:
        raise ValueError(f"the resume checkpoint is from rank {meta.get('rank', 0)} of "
                         f"{meta.get('world_size', 1)} process(es); this is rank {r} of {w}")


def _with_rank(snap: SensitivitySnapshot, r: int, w: int, merged: bool = False,
               **changes) -> DistributedSensitivitySnapshot:
    values = {f.name: getattr(snap, f.name) for f in dataclasses.fields(SensitivitySnapshot)}
    values.update(changes)
    return DistributedSensitivitySnapshot(**values, rank=r, world_size=w, merged=merged)


def _run_and_merge(local: Iterator[SensitivitySnapshot], seed: int, r: int, w: int,
                   remap_reservoir: bool) -> Iterator[DistributedSensitivitySnapshot]:
    last, error = None, None
    try:
        for snap in local:
            last = snap
            yield _with_rank(snap, r, w)
    except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
        if not is_distributed():
            raise
        error = exc
    if not is_distributed():
        yield _with_rank(last, r, w, merged=True, seed=seed)
        return

    device = _comm_device()
    ok = error is None
    row = torch.tensor([int(not ok), last.done if ok else 0, last.batches if ok else 0,
                        -1 if not ok or last.total is None else last.total, last.seq_len if ok else 0],
                       dtype=torch.int64, device=device)
    rows = [torch.empty_like(row) for _ in range(w)]
    dist.all_gather(rows, row)
    table = torch.stack(rows).cpu()  # [W, 5]: failed, done, batches, total (-1: unknown), seq_len
    if bool(table[:, 0].any()):  # every rank sees the same table, so all of them gather the messages
        reports = _all_gather_json(_failure_text(error), device)
        if error is not None:
            raise error
        raise RankFailure("while processing their shard",
                          {r: report for r, report in enumerate(reports) if report is not None})

    seq_len = int(table[:, 4].max())
    grown = {lay: _grow_welford(st, seq_len) for lay, st in last.stats.items()}
    stats = LayerDict(all_merge_welford(grown), num_layers=last.stats.num_layers)
    reservoir = _grow_reservoir(last.reservoir, seq_len)
    if remap_reservoir and r == 0:
        idx = reservoir.sample_index
        reservoir.sample_index = torch.where(idx >= 0, idx * w, idx)
    probe_rng = last.probe_rng.clone()
    _broadcast_from_rank0(reservoir, probe_rng, device)
    totals = table[:, 3]
    yield _with_rank(
        last, r, w, merged=True, seed=seed, stats=stats, reservoir=reservoir, probe_rng=probe_rng,
        seq_len=seq_len, done=int(table[:, 1].sum()), batches=int(table[:, 2].sum()),
        total=None if bool((totals < 0).any()) else int(totals.sum()),
    )


def _grow_welford(state: WelfordState, seq_len: int) -> WelfordState:
    """``state`` of cell grid ``[S, S]`` on the larger grid ``[seq_len, seq_len]`` (new cells empty)."""
    pad = seq_len - state.shape[-1]
    if pad == 0:
        return state
    fill = {"count": 0.0, "mean": 0.0, "m2": 0.0, "min": float("inf"), "max": float("-inf")}
    sd = state.state_dict()
    sd.update({k: F.pad(sd[k], (0, pad, 0, pad), value=v) for k, v in fill.items()})
    return WelfordState.from_state_dict(sd, device=state.device)


def _grow_reservoir(reservoir: SampleReservoir, seq_len: int) -> SampleReservoir:
    """A copy of ``reservoir`` storing ``seq_len`` positions (new positions empty, as for short samples)."""
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


def _broadcast_from_rank0(reservoir: SampleReservoir, probe_rng: Tensor, device: torch.device) -> None:
    """Overwrite ``reservoir`` and ``probe_rng`` in place with rank 0's (same shapes on every rank)."""
    sd = reservoir.state_dict()
    sd["probe_rng"] = probe_rng
    received = {}
    for key in sorted(sd):
        t = sd[key]
        wire = (t.to(torch.uint8) if t.dtype == torch.bool else t).to(device).contiguous()  # gloo has no bool
        dist.broadcast(wire, src=0)
        received[key] = wire.cpu().to(t.dtype)
    probe_rng.copy_(received.pop("probe_rng"))
    reservoir.load_state_dict(received)
