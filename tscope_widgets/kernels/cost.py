r"""What an analysis will cost, said before it runs: memory from a model of the graph, time from one measured unit.

Memory of a double-backward curvature product (the default route), in bytes:

.. math::

    M \approx s \,(c_P P + c_A T A), \qquad A = L (16 D + 2 h S) + 2 V,

with :math:`s` the dtype's size, :math:`P` the model's parameters (copy, gradient graph, gradient, tangent,
product), :math:`T` the tokens of all batches, :math:`A` the activations a forward pass keeps per token
(Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models": ``34 s b h``
bytes of half-precision activations per layer, i.e. about :math:`16 D` values per token, plus
:math:`2 h S` of attention scores and their softmax; and the logits with their softmax), :math:`L`
layers, :math:`D` the width, :math:`h` heads, :math:`S` the longest sequence and :math:`V` the
vocabulary. :math:`c_P = 4` and :math:`c_A = 7` were fitted to the peak RSS added by two products on
four GPT-2 shapes (float32, one thread: 67M parameters with B4 S32; 1.7M with B16 S128; 1.3M with B8
S256; 10.5M with B32 S64): the model was within -6% to +20% of the measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CostEstimate", "available_memory", "product_memory", "check_memory", "measure_seconds"]

PARAM_COPIES = 4  # c_P
ACTIVATION_COPIES = 7  # c_A
# Refuse when the estimate exceeds this share of the memory available (the estimate is within about 20%).
MEMORY_HEADROOM = 0.9


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.3g} s"
    if s < 5400:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


@dataclass(frozen=True)
class CostEstimate:
    """The predicted cost of ``units`` repetitions of one measured unit of work.

    Attributes:
        what: The unit (``"Hessian-vector product"``, ``"grid point"``, ...).
        units: How many the analysis needs at most.
        seconds_per_unit: Measured wall time of one unit (after any one-time set-up).
        setup_seconds: Measured one-time cost (building the gradient graph, ...).
        peak_bytes: Estimated peak memory of the analysis (see the module docstring), or ``None``.
        available_bytes: Memory available on the device when estimated, or ``None`` if unknown.
    """

    what: str
    units: int
    seconds_per_unit: float
    setup_seconds: float = 0.0
    peak_bytes: int | None = None
    available_bytes: int | None = None

    @property
    def seconds(self) -> float:
        """Predicted wall time of the whole analysis."""
        return self.setup_seconds + self.units * self.seconds_per_unit

    def __str__(self) -> str:
        text = (f"up to {self.units} {self.what}s of {_duration(self.seconds_per_unit)} each (measured): "
                f"about {_duration(self.seconds)}")
        if self.peak_bytes is not None:
            text += f", memory about {_size(self.peak_bytes)}"
            if self.available_bytes is not None:
                text += f" of {_size(self.available_bytes)} available"
        return text


def available_memory(device: torch.device | str) -> int | None:
    """Bytes free for a new allocation on ``device``: the GPU's free memory, or Linux's ``MemAvailable``
    (``None`` where neither is known)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def product_memory(adapter, batches: Sequence[Mapping[str, Tensor]], dtype: torch.dtype,
                   num_params: int | None = None, activation_copies: int = ACTIVATION_COPIES) -> int:
    """Estimated peak bytes of double-backward curvature products of ``adapter``'s model over ``batches``.

    Args:
        adapter: A :class:`~tscope_widgets.models.adapter.ModelAdapter`.
        batches: Batch dicts with ``input_ids [B, S]``.
        dtype: The analysis dtype.
        num_params: Parameters held per vector (default: the whole model).
        activation_copies: :math:`c_A`; about 2 for routes that keep no second-order graph (finite
            differences: one forward and backward at a time).
    """
    P = sum(p.numel() for p in adapter.model.parameters()) if num_params is None else num_params
    tokens = sum(int(b["input_ids"].numel()) for b in batches)
    S = max(int(b["input_ids"].shape[-1]) for b in batches)
    D, L, V = adapter.d_model, adapter.num_layers, adapter.vocab_size
    heads = max(1, D // 64)
    per_token = L * (16 * D + 2 * heads * S) + 2 * V
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(itemsize * (PARAM_COPIES * P + activation_copies * tokens * per_token))


def check_memory(need: int, device: torch.device | str, what: str, alternatives: Sequence[str]) -> None:
    """Raise ``MemoryError`` naming the estimate, what is available and the ``alternatives`` when ``need``
    bytes would not fit on ``device`` (nothing is checked where the free memory is unknown)."""
    free = available_memory(device)
    if free is None or need <= MEMORY_HEADROOM * free:
        return
    raise MemoryError(
        f"{what} would need about {_size(need)} of memory, but {_size(free)} is available on {torch.device(device)}; "
        f"nothing was allocated. Instead: {'; '.join(alternatives)}"
    )


def measure_seconds(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Wall time of one call of ``fn`` (synchronising a GPU before and after)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start

