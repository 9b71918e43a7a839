"""Learning curves: train and test overall accuracy per epoch."""

from __future__ import annotations

from typing import Mapping, Sequence

from matplotlib.figure import Figure

from sembridge_jax.viz import validation


def plot_learning_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], *,
                         title: str = "") -> Figure:
  """One colour per run: test OA (solid, ``oa``) and train OA (dashed, ``train_oa``, the
  epoch's training batches) against ``epoch``, in percent.

  ``histories`` maps a label to the run's evaluated epochs (dicts with ``epoch``, ``oa``
  and optionally ``train_oa``), e.g. `sembridge_jax.train.trainer.Trained.history`.
  """
  if not histories:
    raise ValueError("`histories` is empty; nothing to draw.")
  figure = Figure(figsize=(6.4, 4.0), constrained_layout=True)
  axes = figure.add_subplot()
  for index, (label, history) in enumerate(histories.items()):
    colour = f"C{index % 10}"
    rows = [r for r in history if "oa" in r and "epoch" in r]
    epochs = validation.finite_array(f"histories[{label!r}] epochs", [r["epoch"] for r in rows],
                                     ndim=1)
    test = validation.finite_array(f"histories[{label!r}] oa", [r["oa"] for r in rows], ndim=1)
    axes.plot(epochs, 100 * test, color=colour, label=f"{label}: test")
    train = [(r["epoch"], r["train_oa"]) for r in rows if "train_oa" in r]
    if train:
      axes.plot([e for e, _ in train], [100 * v for _, v in train], color=colour,
                linestyle="--", label=f"{label}: train")
  axes.set_xlabel("epoch")
  axes.set_ylabel("overall accuracy (%)")
  axes.grid(alpha=0.3)
  axes.legend(fontsize="small", ncol=2 if len(histories) > 3 else 1)
  if title:
    axes.set_title(title)
  return figure
