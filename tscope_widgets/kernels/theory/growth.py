r"""Growth of self-attention Hessian blocks with the embedding scale (Ormaniec, Dangel & Singh, ICLR 2025).

For each embedding scale :math:`\sigma` the token and position embeddings are drawn as
:math:`W_E, W_{pos} \sim N(0, \sigma^2)` (every other weight GPT-2 style, :math:`N(0, (0.8/\sqrt d)^2)`,
biases 0, LayerNorm gains 1), and the Frobenius norms of the diagonal blocks
:math:`H_{QQ}` and :math:`H_{VV}` of one layer's query and value weights are measured for the Hessian
:math:`H`, its Gauss–Newton part :math:`G = J^\top (\nabla_z^2 \ell) J` and the functional part
:math:`H - G`, each with :func:`~tscope_widgets.kernels.frobenius.hutchinson_frobenius` (exact from the unit
vectors for blocks of at most ``exact_max`` parameters), over seeds of the model, the data and the probes.

At small :math:`\sigma` (one layer, no LayerNorm, ReLU) the paper derives :math:`\lVert H_{QQ} \rVert \propto
\sigma^5` (its functional part dominates), :math:`\lVert G_{QQ} \rVert \propto \sigma^6`,
:math:`\lVert H_{VV} \rVert \propto \sigma^2` with :math:`H_{VV} - G_{VV} \equiv 0` (the output is
piecewise linear in :math:`W_V`), and, for linear attention without the attention skip
(``residual_scale = 0``) and the MSE loss, :math:`\sigma^{2 \cdot 3^L}` for the last of ``L`` layers.
:func:`growth_exponent` fits the slopes on a log-log scale; :func:`crossing_sigma` finds where two curves
cross.

:func:`iter_growth_rates` is a generator: it yields a :class:`GrowthRates` snapshot after every
``(setting, σ, seed)`` point, and ``resume=`` (a checkpoint of such a snapshot) skips the points done.
Every point is a pure function of its setting, ``σ`` index and seed (its own generators), so a resumed run
equals an uninterrupted one bit for bit.

References:
    Ormaniec, W., Dangel, F. & Singh, S. P. (2025). What does it mean to be a transformer? Insights from a
    theoretical Hessian analysis. ICLR 2025.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ...models.tiny import TinyConfig, TinyTransformer
from ...tasks import Task, get_task
from ..curvature import HessianOperator
from ..curvature.losses import LogitLoss
from ..frobenius import hutchinson_frobenius

__all__ = [
    "GROWTH_BLOCKS",
    "GROWTH_PARTS",
    "GrowthRates",
    "GrowthSetting",
    "crossing_sigma",
    "growth_exponent",
    "growth_model",
    "growth_sigmas",
    "iter_growth_rates",
]

GROWTH_BLOCKS = ("q", "v")
GROWTH_PARTS = ("hessian", "ggn", "functional")
INIT_GAIN = 0.8  # GPT-2-style weights N(0, (0.8 / sqrt(d))^2), as in the paper's experiments
EMBEDDING_DRAWS = ("per_sigma", "shared")


def growth_sigmas(log10_start: float = -2.0, log10_stop: float = 1.0, num: int = 20) -> tuple[float, ...]:
    """``10 ** linspace(log10_start, log10_stop, num)`` as floats (the paper's grid is ``(-2, 1, 20)``)."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"growth_sigmas: num must be a positive int, got {num!r}")
    return tuple(float(s) for s in torch.logspace(log10_start, log10_stop, num, dtype=torch.float64))


@dataclass(frozen=True)
class GrowthSetting:
    """One curve family of the growth-rate experiment: an architecture, a loss and its ``σ`` grid.

    Attributes:
        label: Name in results and plots (e.g. ``"L=1"``, ``"pre-LN"``, ``"linear L=2"``).
        n_layer: Number of blocks ``L >= 1``.
        norm: ``"none"`` or ``"pre"`` (pre-LN with a final LayerNorm), as in :class:`TinyConfig`.
        attention: ``"softmax"`` or ``"linear"``.
        residual_scale: Scale ``a`` of the attention skip, ``a·x + attn(x)`` (``0``: no skip).
        loss: ``"ce"`` (cross-entropy) or ``"mse"`` on the answer tokens (see :class:`LogitLoss`).
        sigmas: The embedding scales, increasing, all ``> 0``.
        layer: The block whose ``W_Q``/``W_V`` are measured (``None``: the last one).
    """

    label: str
    n_layer: int = 1
    norm: str = "none"
    attention: str = "softmax"
    residual_scale: float = 1.0
    loss: str = "ce"
    sigmas: tuple[float, ...] = field(default_factory=growth_sigmas)
    layer: int | None = None

    def __post_init__(self):
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"GrowthSetting: label must be a non-empty string, got {self.label!r}")
        if isinstance(self.n_layer, bool) or not isinstance(self.n_layer, int) or self.n_layer < 1:
            raise ValueError(f"GrowthSetting {self.label!r}: n_layer must be an int >= 1, got {self.n_layer!r}")
        for name, value, allowed in (("norm", self.norm, ("none", "pre")),
                                     ("attention", self.attention, ("softmax", "linear")),
                                     ("loss", self.loss, ("ce", "mse"))):
            if value not in allowed:
                raise ValueError(f"GrowthSetting {self.label!r}: {name}={value!r}; expected one of {allowed}")
        if not isinstance(self.residual_scale, (int, float)) or isinstance(self.residual_scale, bool) \
                or not math.isfinite(self.residual_scale):
            raise ValueError(f"GrowthSetting {self.label!r}: residual_scale must be a finite number, "
                             f"got {self.residual_scale!r}")
        sig = tuple(float(s) for s in self.sigmas)
        increasing = all(b > a for a, b in zip(sig, sig[1:], strict=False))
        if not sig or not all(math.isfinite(s) and s > 0 for s in sig) or not increasing:
            raise ValueError(f"GrowthSetting {self.label!r}: sigmas must be positive, finite and increasing, "
                             f"got {self.sigmas!r}; e.g. growth_sigmas(-2, 1, 20)")
        object.__setattr__(self, "sigmas", sig)
        object.__setattr__(self, "residual_scale", float(self.residual_scale))
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)
                                       or not 0 <= self.layer < self.n_layer):
            raise ValueError(f"GrowthSetting {self.label!r}: layer must be None (the last) or in "
                             f"[0, {self.n_layer}), got {self.layer!r}")

    @property
    def block(self) -> int:
        """The measured block's index."""
        return self.n_layer - 1 if self.layer is None else self.layer

    def to_dict(self) -> dict[str, Any]:
        """JSON values (``sigmas`` a list)."""
        out = asdict(self)
        out["sigmas"] = list(self.sigmas)
        return out


def growth_model(
    setting: GrowthSetting,
    sigma: float,
    seed: int,
    *,
    sigma_index: int = 0,
    d_model: int = 128,
    n_head: int = 1,
    d_mlp: int = 512,
    activation: str = "relu",
    task: Task | None = None,
    embedding_draw: str = "per_sigma",
    biases: bool = False,
) -> TinyTransformer:
    r"""The float64 model of one point: weights from ``seed``, embeddings :math:`N(0, \sigma^2)`.

    Every weight matrix (attention, MLP, unembedding) is :math:`N(0, (0.8/\sqrt{d})^2)` from a generator
    seeded with ``seed``; there are no biases (``bias=False``; the paper's are zero at initialisation, so the
    forward pass and the weight blocks are the same), or with ``biases=True`` the paper's layout (zero biases
    on the MLP and the unembedding, none on attention: 3,836 parameters at ``d = 16``, ``d_mlp = 64``, one
    layer, no LayerNorm); LayerNorm gains are 1. The embeddings are ``σ`` times a standard normal draw from a
    generator seeded with ``(seed, sigma_index)`` (``embedding_draw="per_sigma"``: redrawn for each ``σ``) or
    with ``seed`` alone (``"shared"``: one draw scaled). The global random state is left untouched.

    Args:
        setting: The architecture (layers, norm, attention kind, attention-skip scale).
        sigma: The embedding scale ``σ > 0``.
        seed: Seed of the weights (and of the embeddings).
        sigma_index: Index of ``σ`` on its grid (seeds the embedding draw).
        d_model: Width ``d``.
        n_head: Heads per layer.
        d_mlp: MLP width (0: attention only).
        activation: ``"relu"`` or ``"gelu"``.
        task: The task whose vocabulary and sequence length size the embeddings (default: addition).
        embedding_draw: ``"per_sigma"`` or ``"shared"``.
        biases: Zero biases on the MLP and the unembedding (none on attention), as in the paper's model.

    Returns:
        A :class:`TinyTransformer` in float64.
    """
    if embedding_draw not in EMBEDDING_DRAWS:
        raise ValueError(f"embedding_draw={embedding_draw!r}; expected one of {EMBEDDING_DRAWS}")
    task = get_task("addition") if task is None else task
    cfg = TinyConfig(vocab_size=task.vocab_size, max_seq_len=task.seq_len, d_model=d_model, n_layer=setting.n_layer,
                     n_head=n_head, d_mlp=d_mlp, norm=setting.norm, attention=setting.attention,
                     residual_scale=setting.residual_scale, residual_scale_mode="attention_skip",
                     activation=activation, bias=biases, attention_bias=False, head_bias=biases)
    with torch.random.fork_rng(devices=[]):  # the constructor's default init draws from the global state
        model = TinyTransformer(cfg).double()
    weights = torch.Generator().manual_seed(int(seed))
    embed_seed = int(seed) if embedding_draw == "shared" else int(seed) * 1_000_003 + int(sigma_index) + 1
    embeddings = torch.Generator().manual_seed(embed_seed)
    std = INIT_GAIN / math.sqrt(d_model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("wte.weight", "wpe.weight"):
                continue
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=weights, dtype=torch.float64) * std)
            elif name.endswith(".bias"):
                p.zero_()
            else:  # LayerNorm gains
                p.fill_(1.0)
        for p in (model.wte.weight, model.wpe.weight):
            p.copy_(torch.randn(p.shape, generator=embeddings, dtype=torch.float64) * sigma)
    return model


@dataclass
class GrowthRates:
    r"""Block norms against ``σ``: the snapshot :func:`iter_growth_rates` yields after every point.

    Entries not computed yet are NaN. Axes: settings ``G``, ``σ`` index ``I`` (the longest grid; shorter
    grids are NaN-padded), seeds ``J``, blocks ``("q", "v")``, parts ``("hessian", "ggn", "functional")``.

    Attributes:
        settings: The :class:`GrowthSetting` of each row.
        seeds: The seeds ``[J]``.
        sigmas: ``[G, I]`` float64 (NaN past a setting's grid).
        norms: :math:`\lVert \cdot \rVert_F` ``[G, I, J, 2, 3]`` float64.
        probe_stderr: Hutchinson standard error of each norm (delta method; 0 where exact) ``[G, I, J, 2, 3]``.
        point_done: ``[G, I, J]`` bool.
        done: Points done. total: Points in all.
        num_matvecs: Curvature-vector products spent.
        config: The run's other settings (width, heads, batch, probes, ...), JSON values.
    """

    settings: list[GrowthSetting]
    seeds: list[int]
    sigmas: Tensor
    norms: Tensor
    probe_stderr: Tensor
    point_done: Tensor
    done: int
    total: int
    num_matvecs: int
    config: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """The settings' labels."""
        return [s.label for s in self.settings]

    def mean(self) -> Tensor:
        """Mean norm over the seeds done, ``[G, I, 2, 3]`` (NaN where none is done)."""
        return _nanmean(self.norms, 2)

    def stderr(self) -> Tensor:
        """Standard error of :meth:`mean` over seeds (sample std over ``sqrt(n)``), ``[G, I, 2, 3]``; NaN below two."""
        n = (~torch.isnan(self.norms)).sum(2).to(torch.float64)
        dev = torch.where(torch.isnan(self.norms), 0.0, self.norms - self.mean()[:, :, None])
        var = dev.square().sum(2) / (n - 1)
        return torch.where(n >= 2, (var / n).sqrt(), torch.full_like(var, math.nan))

    def exponents(self, max_sigma: float = 0.26) -> tuple[Tensor, Tensor]:
        """Fitted slopes of :meth:`mean` on ``σ <= max_sigma`` (see :func:`growth_exponent`): ``(slope, stderr)``,
        each ``[G, 2, 3]``."""
        slopes = torch.full((len(self.settings), 2, 3), math.nan, dtype=torch.float64)
        errs = slopes.clone()
        mean = self.mean()
        for g in range(len(self.settings)):
            n = len(self.settings[g].sigmas)
            s, e = growth_exponent(self.sigmas[g, :n], mean[g, :n].reshape(n, -1), max_sigma=max_sigma)
            slopes[g], errs[g] = s.reshape(2, 3), e.reshape(2, 3)
        return slopes, errs

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for a checkpoint."""
        return {"norms": self.norms.clone(), "probe_stderr": self.probe_stderr.clone(),
                "point_done": self.point_done.clone(), "sigmas": self.sigmas.clone()}

    def meta(self) -> dict[str, Any]:
        """JSON settings and counters (what a resumed run must match)."""
        return {"kernel": "growth_rates", "settings": [s.to_dict() for s in self.settings], "seeds": list(self.seeds),
                "blocks": list(GROWTH_BLOCKS), "parts": list(GROWTH_PARTS), "config": dict(self.config),
                "num_matvecs": self.num_matvecs, "done": self.done, "total": self.total}


def growth_exponent(sigmas: Tensor, norms: Tensor, max_sigma: float = 0.26) -> tuple[Tensor, Tensor]:
    r"""Least-squares slopes ``k`` of :math:`\log_{10} \lVert\cdot\rVert = k \log_{10} \sigma + c`, ``σ <= max_sigma``.

    Args:
        sigmas: ``[I]`` positive.
        norms: ``[I]`` or ``[I, M]`` (``M`` curves), positive where used; NaN rows are skipped per curve.
        max_sigma: The largest ``σ`` of the fit (the paper's low-``σ`` range ends at about 0.26).

    Returns:
        ``(slope, stderr)``, each ``[]`` or ``[M]`` float64: the ordinary-least-squares slope and its standard
        error :math:`\sqrt{\sum r^2 / (n - 2) / \sum (x - \bar x)^2}` (NaN with fewer than two points; 0
        stderr with exactly two). A curve with a zero or negative norm in range gets NaN.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    y = torch.as_tensor(norms, dtype=torch.float64)
    squeeze = y.ndim == 1
    y = y[:, None] if squeeze else y
    if sigmas.ndim != 1 or y.shape[0] != sigmas.shape[0]:
        raise ValueError(f"growth_exponent: sigmas [I] and norms [I] or [I, M] must agree, got "
                         f"{tuple(sigmas.shape)} and {tuple(torch.as_tensor(norms).shape)}")
    use = (sigmas <= max_sigma)[:, None] & ~torch.isnan(y)  # [I, M]
    x = sigmas.log10()[:, None].expand_as(y)
    ly = torch.where(use & (y > 0), y.clamp_min(1e-300).log10(), torch.zeros_like(y))
    bad = (use & ~(y > 0)).any(0)
    w = use.to(torch.float64)
    n = w.sum(0)
    xm, ym = (w * x).sum(0) / n, (w * ly).sum(0) / n
    sxx = (w * (x - xm).square()).sum(0)
    slope = (w * (x - xm) * (ly - ym)).sum(0) / sxx
    resid = w * (ly - ym - slope * (x - xm))
    stderr = torch.where(n > 2, (resid.square().sum(0) / (n - 2) / sxx).sqrt(), torch.zeros_like(slope))
    nan = torch.full_like(slope, math.nan)
    slope = torch.where((n >= 2) & ~bad, slope, nan)
    stderr = torch.where((n >= 2) & ~bad, stderr, nan)
    return (slope[0], stderr[0]) if squeeze else (slope, stderr)


def crossing_sigma(sigmas: Tensor, a: Tensor, b: Tensor) -> float:
    """The first ``σ`` where curve ``a`` overtakes ``b`` or falls below it, interpolated on the log-log scale.

    Args:
        sigmas: ``[I]`` increasing.
        a: ``[I]`` positive norms.
        b: ``[I]`` positive norms.

    Returns:
        ``σ`` of the first sign change of ``log a - log b`` (``nan`` if the curves do not cross).
    """
    sigmas, a, b = (torch.as_tensor(t, dtype=torch.float64) for t in (sigmas, a, b))
    d = a.log10() - b.log10()  # [I]
    change = torch.nonzero((d[:-1] * d[1:] < 0) | (d[1:] == 0)).flatten()
    if not len(change):
        return math.nan
    i = int(change[0])
    x0, x1 = math.log10(sigmas[i]), math.log10(sigmas[i + 1])
    t = float(d[i] / (d[i] - d[i + 1]))
    return 10 ** (x0 + t * (x1 - x0))


def iter_growth_rates(
    settings: GrowthSetting | Sequence[GrowthSetting],
    *,
    seeds: int | Sequence[int] = 20,
    d_model: int = 128,
    n_head: int = 1,
    d_mlp: int = 512,
    activation: str = "relu",
    batch_size: int = 64,
    task: str | Task = "addition",
    num_samples: int = 20,
    exact_max: int | None = None,
    embedding_draw: str = "per_sigma",
    resume: Any = None,
) -> Iterator[GrowthRates]:
    r"""Stream the block-norm growth experiment: one :class:`GrowthRates` after every ``(setting, σ, seed)`` point.

    For each point: the model of :func:`growth_model`, a batch of ``batch_size`` task samples drawn with a
    generator seeded by the seed (the same data at every ``σ``), and a Hessian and a GGN
    :class:`~tscope_widgets.kernels.curvature.HessianOperator` over the blocks ``block{l}.attn.q`` and
    ``block{l}.attn.v`` (float64, the setting's loss on the labelled answer tokens), whose diagonal blocks go
    to :func:`~tscope_widgets.kernels.frobenius.hutchinson_frobenius` with ``num_samples`` Rademacher probes
    from a generator seeded by ``(seed, block)``: the same probes at every ``σ`` and for every part (common
    random numbers, so the fitted slopes are not blurred by the probes).
    Each probe block is multiplied once by the Hessian and once by the GGN; the functional part's products are
    their difference (the operator ``kind="functional"`` computes the same difference).
    Blocks of at most ``exact_max`` parameters are computed exactly.

    Args:
        settings: One :class:`GrowthSetting` or several (labels must differ).
        seeds: Number of seeds (``0 .. n-1``) or the seeds themselves.
        d_model: Width.
        n_head: Heads per layer.
        d_mlp: MLP width (0: attention only).
        activation: ``"relu"`` or ``"gelu"``.
        batch_size: Samples per point.
        task: Task name or :class:`~tscope_widgets.tasks.Task` (its labels mark the scored tokens).
        num_samples: Hutchinson probes per block and part.
        exact_max: Blocks with at most this many parameters are exact (default: ``num_samples``, where exact
            costs no more products than the probes).
        embedding_draw: ``"per_sigma"`` (embeddings redrawn for each ``σ``) or ``"shared"`` (one draw, scaled).
        resume: A checkpoint (``.tensors``, ``.meta``) of a snapshot of the same run: its points are kept.

    Yields:
        :class:`GrowthRates` (independent copies); the last holds every point.

    Raises:
        ValueError: For bad settings, counts, duplicate labels, or a checkpoint of another run.
    """
    settings = [settings] if isinstance(settings, GrowthSetting) else list(settings)
    if not settings or not all(isinstance(s, GrowthSetting) for s in settings):
        raise ValueError("iter_growth_rates: settings must be a GrowthSetting or a non-empty list of them")
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise ValueError(f"iter_growth_rates: setting labels must differ, got {labels}")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"iter_growth_rates: seeds must be >= 1, got {seeds}")
        seeds = list(range(seeds))
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ValueError(f"iter_growth_rates: seeds must be distinct ints >= 0, got {seeds!r}")
    for name, value, low in (("d_model", d_model, 1), ("n_head", n_head, 1), ("d_mlp", d_mlp, 0),
                             ("batch_size", batch_size, 1), ("num_samples", num_samples, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"iter_growth_rates: {name} must be an int >= {low}, got {value!r}")
    exact_max = num_samples if exact_max is None else exact_max
    if isinstance(exact_max, bool) or not isinstance(exact_max, int) or exact_max < 0:
        raise ValueError(f"iter_growth_rates: exact_max must be an int >= 0, got {exact_max!r}")
    if embedding_draw not in EMBEDDING_DRAWS:
        raise ValueError(f"iter_growth_rates: embedding_draw={embedding_draw!r}; expected one of {EMBEDDING_DRAWS}")
    task_obj = get_task(task)
    config = {"d_model": d_model, "n_head": n_head, "d_mlp": d_mlp, "activation": activation,
              "batch_size": batch_size, "task": task_obj.name, "task_config": _task_config(task_obj),
              "num_samples": num_samples, "exact_max": exact_max, "embedding_draw": embedding_draw}
    run = _GrowthRun(settings, seeds, config, task_obj)
    if resume is not None:
        run.restore(resume)
    yield from run.snapshots()


def _task_config(task: Task) -> dict:
    config = getattr(task, "config", None)
    return config() if callable(config) else {}


class _GrowthRun:
    def __init__(self, settings: list[GrowthSetting], seeds: list[int], config: dict, task: Task):
        self.settings, self.seeds, self.config, self.task = settings, seeds, config, task
        G, n_sigma, J = len(settings), max(len(s.sigmas) for s in settings), len(seeds)
        self.sigmas = torch.full((G, n_sigma), math.nan, dtype=torch.float64)
        for g, s in enumerate(settings):
            self.sigmas[g, : len(s.sigmas)] = torch.tensor(s.sigmas, dtype=torch.float64)
        shape = (G, n_sigma, J, len(GROWTH_BLOCKS), len(GROWTH_PARTS))
        self.norms = torch.full(shape, math.nan, dtype=torch.float64)
        self.probe_stderr = torch.full(shape, math.nan, dtype=torch.float64)
        self.point_done = torch.zeros(G, n_sigma, J, dtype=torch.bool)
        self.total = sum(len(s.sigmas) for s in settings) * J
        self.num_matvecs = 0

    def restore(self, checkpoint) -> None:
        meta, t = getattr(checkpoint, "meta", None), getattr(checkpoint, "tensors", None)
        if not isinstance(meta, Mapping) or not isinstance(t, Mapping):
            raise TypeError(f"resume must be a checkpoint with .tensors and .meta, got {type(checkpoint).__name__}")
        where = f"growth-rate checkpoint {getattr(checkpoint, 'path', '') or ''}".rstrip()
        if meta.get("kernel") != "growth_rates":
            raise ValueError(f"{where} is from kernel {meta.get('kernel')!r}, not 'growth_rates': start a new run")
        mine = self._snapshot().meta()
        for key in ("settings", "seeds", "config"):
            if meta.get(key) != mine[key]:
                raise ValueError(f"{where} was made with other {key} ({meta.get(key)!r}; this run: {mine[key]!r}): "
                                 "resume with the configuration that made it, or start a new run")
        for key in ("norms", "probe_stderr", "point_done"):
            value = t.get(key)
            want = getattr(self, key)
            if not isinstance(value, Tensor) or value.shape != want.shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else None
                raise ValueError(f"{where}: field {key} has shape {got}, expected {tuple(want.shape)}: "
                                 "it is damaged; start a new run")
        matvecs = meta.get("num_matvecs")
        if isinstance(matvecs, bool) or not isinstance(matvecs, int) or matvecs < 0:
            raise ValueError(f"{where}: field num_matvecs must be an integer >= 0, got {matvecs!r}")
        self.norms = t["norms"].to(torch.float64).clone()
        self.probe_stderr = t["probe_stderr"].to(torch.float64).clone()
        self.point_done = t["point_done"].to(torch.bool).clone()
        self.num_matvecs = matvecs

    def snapshots(self) -> Iterator[GrowthRates]:
        if int(self.point_done.sum()) >= self.total:
            yield self._snapshot()
            return
        for g, setting in enumerate(self.settings):
            for i, sigma in enumerate(setting.sigmas):
                for j, seed in enumerate(self.seeds):
                    if self.point_done[g, i, j]:
                        continue
                    self._point(g, i, j, setting, sigma, seed)
                    yield self._snapshot()

    def _point(self, g: int, i: int, j: int, setting: GrowthSetting, sigma: float, seed: int) -> None:
        c = self.config
        model = growth_model(setting, sigma, seed, sigma_index=i, d_model=c["d_model"], n_head=c["n_head"],
                             d_mlp=c["d_mlp"], activation=c["activation"], task=self.task,
                             embedding_draw=c["embedding_draw"])
        batch = self.task.sample(c["batch_size"], torch.Generator().manual_seed(int(seed)))
        self._measure(g, i, j, model, batch, setting.block, LogitLoss(setting.loss), seed)

    def _measure(self, g: int, i: int, j: int, model, batch, block: int, loss, seed: int) -> None:
        """The Frobenius norms of every part of the ``W_Q`` and ``W_V`` blocks of ``block`` at point ``(g, i, j)``."""
        c = self.config
        names = [f"block{block}.attn.{b}" for b in GROWTH_BLOCKS]
        # double backward for both (measured at d = 16, batch 16, 20 columns: GGN 0.09 s against 0.14 s by
        # forward-over-reverse, which route="auto" picks from 8 columns on)
        ops = [HessianOperator(model, batch, groups=names, kind=kind, loss=loss, dtype=torch.float64,
                               route="double_backward") for kind in ("hessian", "ggn")]
        for k, name in enumerate(names):
            parts = _SharedProducts(*(op.restrict([name]) for op in ops))
            n = parts.dim
            for p, part in enumerate(GROWTH_PARTS):
                probes = torch.Generator().manual_seed(int(seed) * len(GROWTH_BLOCKS) + k)  # the same for each part
                est = hutchinson_frobenius(getattr(parts, part), n, c["num_samples"], generator=probes,
                                           exact=n <= c["exact_max"], blocks=True)
                norm = math.sqrt(max(est.value, 0.0))
                self.norms[g, i, j, k, p] = norm
                self.probe_stderr[g, i, j, k, p] = est.stderr / (2 * norm) if norm > 0 else 0.0
            self.num_matvecs += parts.num_matvecs
        self.point_done[g, i, j] = True

    def _snapshot(self) -> GrowthRates:
        return GrowthRates(settings=list(self.settings), seeds=list(self.seeds), sigmas=self.sigmas.clone(),
                           norms=self.norms.clone(), probe_stderr=self.probe_stderr.clone(),
                           point_done=self.point_done.clone(), done=int(self.point_done.sum()), total=self.total,
                           num_matvecs=self.num_matvecs, config=dict(self.config))


class _SharedProducts:
    """``H V``, ``G V`` and ``(H - G) V`` of one block from one Hessian and one GGN product per probe block.

    :func:`hutchinson_frobenius` is called once per part with identically seeded probes, so the three
    calls multiply the same blocks ``V``; each is multiplied once and kept (by value) for the other parts.
    """

    def __init__(self, hessian, ggn):
        self.H, self.G = hessian, ggn
        self.dim = hessian.shape[1]
        self.num_matvecs = 0
        self._seen: list[tuple[Tensor, Tensor, Tensor]] = []

    def _products(self, V: Tensor) -> tuple[Tensor, Tensor]:
        for seen, hv, gv in self._seen:
            if seen.shape == V.shape and torch.equal(seen, V):
                return hv, gv
        hv, gv = self.H.matmat(V), self.G.matmat(V)
        self.num_matvecs += 2 * V.shape[1]
        self._seen.append((V.clone(), hv, gv))
        return hv, gv

    def hessian(self, V: Tensor) -> Tensor:
        return self._products(V)[0]

    def ggn(self, V: Tensor) -> Tensor:
        return self._products(V)[1]

    def functional(self, V: Tensor) -> Tensor:
        hv, gv = self._products(V)
        return hv - gv


def _nanmean(t: Tensor, dim: int) -> Tensor:
    n = (~torch.isnan(t)).sum(dim)
    s = torch.where(torch.isnan(t), 0.0, t).sum(dim)
    return torch.where(n > 0, s / n, torch.full_like(s, math.nan))
