r"""Loss landscapes: directions in parameter space and 1D/2D slices of the loss along them.

A slice looks at the loss :math:`L(\theta)` of a trained model on a plane (or line) through its
parameters :math:`\theta`:

.. math:: f(\alpha, \beta) = L(\theta + \alpha\, d_1 + \beta\, d_2), \qquad g(\alpha) = L(\theta + \alpha\, d)

A :data:`Direction` is a ``dict[str, Tensor]`` keyed by the names of ``model.named_parameters()``
(a tied weight appears once, under its first name), each tensor with its parameter's shape. Directions:

- :func:`random_direction`: Gaussian, with filter normalization (Li, Xu, Taylor, Studer & Goldstein,
  2018), so that slices of networks with different weight scales are comparable;
- :func:`eigen_directions`: extreme eigenvectors of the Hessian (unit norm); along one,
  :math:`g(\alpha) \approx L(\theta) + \alpha\, \nabla L^\top d + \tfrac12 \lambda \alpha^2`
  (:func:`quadratic_model` draws the curvature term at a minimum);
- :func:`checkpoint_direction`: ``b - a`` between two checkpoints (``alphas`` in ``[0, 1]`` from ``a``
  interpolate linearly, Goodfellow, Vinyals & Saxe, 2015);
- :func:`pca_directions`: the top principal directions of a training trajectory (Li et al., 2018, sec. 7),
  with :func:`project_trajectory` to draw the path on the plane;
- :func:`make_directions`: one or two directions of any of these kinds by name (:data:`DIRECTION_KINDS`).

:func:`slice_1d` and :func:`slice_2d` are generators that evaluate a grid (:func:`landscape_grid`) on a
private analysis copy of the model with ``torch.func.functional_call`` (several grid points per call
through ``vmap`` on small models, one point per call in reused parameter buffers on large ones) and yield a
:class:`LandscapeSlice` as rows complete, so a Job can stream it. The user's model is never modified.
Under ``torch.distributed`` each rank passes a shard of the data and every rank gets the slice over all
shards.

A checkpoint is a model, an adapter or a state dict: any ``Mapping[str, Tensor]``, read one tensor at a
time, so a lazy mapping over a file (``tscope_widgets.export.open_state_dict(path)``) lets
:func:`pca_directions` stream a trajectory too large for memory. Files are written and read in
``tscope_widgets.export`` (``save_directions``, ``load_directions``, ``open_state_dict``); nothing here
touches the disk.

Modules, each one job, data flowing down the list:

- :mod:`.state`: reading checkpoints one tensor at a time, parameter names and tied aliases, and
  checking direction dicts against a model;
- :mod:`.trajectory`: principal directions of a trajectory and its projection on a plane;
- :mod:`.directions`: random, checkpoint and Hessian-eigenvector directions, and :func:`make_directions`;
- :mod:`.evaluator`: loss and accuracy at many grid points per call;
- :mod:`.slices`: the grid, the streamed and resumable slices, the quadratic model.

References:
    Li, H., Xu, Z., Taylor, G., Studer, C. & Goldstein, T. (2018). Visualizing the Loss Landscape of
    Neural Nets. NeurIPS 2018.
    Goodfellow, I. J., Vinyals, O. & Saxe, A. M. (2015). Qualitatively characterizing neural network
    optimization problems. ICLR 2015.
"""

from .directions import (
    DIRECTION_KINDS,
    NORMALIZATIONS,
    DirectionSet,
    checkpoint_direction,
    eigen_directions,
    make_directions,
    random_direction,
)
from .evaluator import (
    CPU_PARAMETER_COPIES_BUDGET,
    MAX_POINTS_PER_CALL,
    MAX_POINTS_PER_CALL_DEFAULT,
    POINTS_MEMORY_BUDGET,
    default_points_per_call,
)
from .slices import LandscapeSlice, check_grid_memory, grid_memory, landscape_grid, quadratic_model, slice_1d, slice_2d
from .span import DEFAULT_RISE, PROBE_ALPHAS, eigen_span, probe_span, rise_span
from .state import Direction, ModelState, TensorDescriptions, direction_norm
from .trajectory import pca_directions, project_trajectory

__all__ = [
    "Direction",
    "ModelState",
    "TensorDescriptions",
    "direction_norm",
    "LandscapeSlice",
    "random_direction",
    "eigen_directions",
    "checkpoint_direction",
    "pca_directions",
    "project_trajectory",
    "make_directions",
    "DirectionSet",
    "DIRECTION_KINDS",
    "landscape_grid",
    "grid_memory",
    "check_grid_memory",
    "slice_1d",
    "slice_2d",
    "quadratic_model",
    "eigen_span",
    "rise_span",
    "probe_span",
    "PROBE_ALPHAS",
    "DEFAULT_RISE",
    "default_points_per_call",
    "POINTS_MEMORY_BUDGET",
    # settings of the kernels, importable as before the split
    "NORMALIZATIONS",
    "MAX_POINTS_PER_CALL",
    "MAX_POINTS_PER_CALL_DEFAULT",
    "CPU_PARAMETER_COPIES_BUDGET",
]
