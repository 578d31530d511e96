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

Modules, top to bottom: :mod:`~tscope_widgets.distributed.group` (the process group, failures,
broadcasts, checks of sameness), :mod:`~tscope_widgets.distributed.shard` (who gets which samples),
:mod:`~tscope_widgets.distributed.merge` (exact Welford merges),
:mod:`~tscope_widgets.distributed.sensitivity` (the sensitivity driver).

References:
    Chan, T. F., Golub, G. H. & LeVeque, R. J. (1983). Algorithms for computing the sample variance:
    analysis and recommendations. The American Statistician 37(3), 242-247.
"""

from .group import (
    DistContext,
    RankFailure,
    broadcast_json,
    broadcast_module_,
    check_all_ranks,
    check_same_on_every_rank,
    context,
    init_from_env,
    is_distributed,
    rank,
    rank_seed,
    world_size,
)
from .merge import all_merge_welford
from .sensitivity import DistributedSensitivitySnapshot, iter_sensitivity_distributed, sensitivity_statistics
from .shard import shard, shard_indices

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
