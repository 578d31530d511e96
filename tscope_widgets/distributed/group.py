"""The process group: who this process is, start-up from torchrun's environment, collectives that keep ranks in step.

A failure on one rank must not leave the others waiting in a collective: :func:`check_all_ranks` lets
every rank report how a step went and raises :class:`RankFailure` on every rank if any failed. What
every rank must hold alike (a model trained on rank 0, the data) is sent with :func:`broadcast_module_`
(or :func:`broadcast_json`) and checked with :func:`check_same_on_every_rank`. Without torchrun's
environment everything runs as a world of one process and the collectives are skipped.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistContext",
    "RankFailure",
    "all_gather_json",
    "broadcast_json",
    "broadcast_module_",
    "check_all_ranks",
    "check_same_on_every_rank",
    "comm_device",
    "context",
    "init_from_env",
    "is_distributed",
    "rank",
    "rank_seed",
    "world_size",
]

# What torchrun exports to every process it starts (LOCAL_RANK too, which defaults to 0 here).
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


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
    return DistContext(rank(), world_size(), local_rank, backend, comm_device())


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


def comm_device() -> torch.device:
    """Where collective buffers must live: the current GPU for nccl, else the CPU."""
    if str(dist.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_json(obj: Any, device: torch.device) -> list[Any]:
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


def failure_text(error: BaseException | None) -> str | None:
    """``"ExceptionType: message"`` of ``error``, or None: what a rank reports to the others."""
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
    reports = all_gather_json(failure_text(error), comm_device())
    failures = {r: report for r, report in enumerate(reports) if report is not None}
    if failures:
        raise RankFailure(what, failures) from error


def broadcast_json(obj: Any) -> Any:
    """Rank 0's ``obj`` (JSON-serialisable) on every rank; call it on every rank (the others' ``obj`` is ignored)."""
    if not is_distributed():
        return obj
    return all_gather_json(obj if rank() == 0 else None, comm_device())[0]


def broadcast_module_(module: torch.nn.Module) -> torch.nn.Module:
    """Overwrite every parameter and buffer of ``module`` in place with rank 0's; returns ``module``.

    Every rank must hold the same architecture (same parameters and buffers, shapes and dtypes, in
    the same order), e.g. built from a config that rank 0 sent with :func:`broadcast_json`. Values
    travel bit for bit (bool buffers as uint8, gloo has no bool).
    """
    if not is_distributed():
        return module
    device = comm_device()
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
    signatures = all_gather_json(signature, comm_device())
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


def rank_seed(seed: int, rank_: int) -> int:
    """Seed of rank ``rank_``'s probe and reservoir generators: ``seed + rank·2³²``.

    Distinct per rank, so Hutchinson probes are independent across ranks (with one seed for all,
    every rank would reuse the same probe sequence on different samples), and rank 0 uses ``seed``
    itself, like a single-process run.
    """
    return seed + (rank_ << 32)
