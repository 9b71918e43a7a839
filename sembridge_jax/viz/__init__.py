"""Figures of SemBridge's transport problems (matplotlib, no pyplot state).

Plotting functions take arrays and return a :class:`matplotlib.figure.Figure`:

* :func:`plot_transport_plan`, :func:`plot_epsilon_sweep`, :func:`plot_dual_potentials`,
  :func:`plot_sinkhorn_convergence` (`sembridge_jax.viz.transport`);
* :func:`plot_matched_pairs`, :func:`false_colour` (`sembridge_jax.viz.images`);
* :func:`plot_transport_costs` (`sembridge_jax.viz.costs`);
* :func:`plot_learning_curves` (`sembridge_jax.viz.curves`).

Reading a pipeline workdir and writing the figures of a finished distillation run are
research code: `sembridge_jax.analysis`. This package imports nothing of the library.
"""

from __future__ import annotations

from sembridge_jax.viz.costs import plot_transport_costs
from sembridge_jax.viz.curves import plot_learning_curves
from sembridge_jax.viz.images import (FALSE_COLOUR, FalseColour, default_false_colour,
                                      false_colour, plot_matched_pairs)
from sembridge_jax.viz.transport import (class_order, plot_dual_potentials, plot_epsilon_sweep,
                                         plot_sinkhorn_convergence, plot_transport_plan,
                                         within_class_mass)

__all__ = [
    "FALSE_COLOUR",
    "FalseColour",
    "class_order",
    "default_false_colour",
    "false_colour",
    "plot_dual_potentials",
    "plot_epsilon_sweep",
    "plot_learning_curves",
    "plot_matched_pairs",
    "plot_sinkhorn_convergence",
    "plot_transport_costs",
    "plot_transport_plan",
    "within_class_mass",
]

