"""Bar chart of transport costs: one bar per setting, or groups of bars per setting.

Fed by :func:`sembridge_jax.analysis.transport_cost.TransportCostTable.as_nested_dict` (setting ->
student -> Sinkhorn divergence), or by any flat ``{label: value}`` mapping.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_transport_costs"]


def _nested(costs: Mapping[str, float] | Mapping[str, Mapping[str, float]]
            ) -> tuple[list[str], list[str], np.ndarray, bool]:
  """(groups, series, values (groups x series, NaN = absent), grouped?)."""
  if not isinstance(costs, Mapping) or not costs:
    raise ValueError("`costs` must be a non-empty mapping label -> value (or label -> "
                     f"{{series: value}}); got {costs!r}.")
  inner = [isinstance(v, Mapping) for v in costs.values()]
  if any(inner) and not all(inner):
    raise ValueError("`costs` mixes numbers and mappings; use either {label: value} or "
                     "{group: {series: value}}.")
  grouped = all(inner)
  nested = costs if grouped else {label: {"": value} for label, value in costs.items()}
  groups = [str(g) for g in nested]
  series: list[str] = []
  for values in nested.values():
    if not values:
      raise ValueError("`costs` has a group with no values.")
    series += [str(s) for s in values if str(s) not in series]
  table = np.full((len(groups), len(series)), np.nan)
  for i, values in enumerate(nested.values()):
    for name, value in values.items():
      try:
        number = float(value)
      except (TypeError, ValueError):
        raise ValueError(f"`costs` value for {groups[i]!r}/{name!r} is not a number: "
                         f"{value!r}.") from None
      if not math.isfinite(number):
        raise ValueError(f"`costs` value for {groups[i]!r}"
                         f"{'/' + repr(name) if grouped else ''} is {number}; a transport "
                         "cost must be finite.")
      table[i, series.index(str(name))] = number
  return groups, series, table, grouped


def plot_transport_costs(costs: Mapping[str, float] | Mapping[str, Mapping[str, float]], *,
                         ax: Axes | None = None, title: str | None = None,
                         ylabel: str = "Sinkhorn divergence S(teacher, student)",
                         value_format: str = "{:.3f}", legend_title: str | None = None
                         ) -> Figure:
  """Bars of transport costs with their values written on top.

  Args:
    costs: ``{setting: value}``, or ``{setting: {series: value}}`` for grouped bars
      (e.g. setting -> student before / after distillation); a missing series in a
      group leaves a gap.
    ax: axes to draw into (default: a new figure).
    title: the title.
    ylabel: the y-axis label.
    value_format: format of the numbers on the bars.
    legend_title: title of the legend of grouped bars.

  Returns:
    The figure holding ``ax``.
  """
  groups, series, table, grouped = _nested(costs)
  if ax is None:
    fig = Figure(figsize=(max(5.5, 2.2 * len(groups) + 1.5), 4.4), layout="constrained")
    ax = fig.add_subplot()
  else:
    fig = ax.figure
  width = 0.8 / len(series)
  positions = np.arange(len(groups))
  for k, name in enumerate(series):
    offsets = positions - 0.4 + width * (k + 0.5)
    present = ~np.isnan(table[:, k])
    bars = ax.bar(offsets[present], table[present, k], width=width * 0.95,
                  label=name if grouped else None, color=f"C{k}" if grouped else "C0")
    ax.bar_label(bars, labels=[value_format.format(v) for v in table[present, k]], fontsize=8,
                 padding=2)
  ax.set_xticks(positions, groups)
  ax.set_ylabel(ylabel)
  ax.set_xlabel("setting")
  top = np.nanmax(table)
  bottom = min(0.0, np.nanmin(table))
  # Head-room above the tallest bar for its value label and the legend.
  ax.set_ylim(bottom * 1.15, top * (1.45 if grouped else 1.18) if top > 0 else 1.0)
  ax.axhline(0.0, color="black", linewidth=0.8)
  ax.grid(axis="y", alpha=0.3)
  ax.set_title(title or "Transport cost between teacher and student feature distributions")
  if grouped:
    ax.legend(title=legend_title, fontsize=8, loc="upper center", ncol=len(series),
              title_fontsize=8)
  return fig
