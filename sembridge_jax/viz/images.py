"""Student RGB images next to their matched teachers' MS images in false colour.

An MS image has 5-14 bands; a screen has three. A *false-colour* composite shows three
chosen bands as red, green and blue. The usual choice for vegetation is NIR-R-G
(vegetation reflects near infrared strongly, so it shows red), which shows what the
teacher sees and the student does not. Each displayed band is stretched per image
between its 2nd and 98th percentile, so dim and bright scenes both use the full range
(absolute radiometry is not comparable across the figure, structure is).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from matplotlib.figure import Figure

from sembridge_jax.viz import validation

__all__ = ["FALSE_COLOUR", "FalseColour", "default_false_colour", "false_colour",
           "plot_matched_pairs"]

class FalseColour(NamedTuple):
  """Three stored MS bands shown as (red, green, blue), and their names."""
  bands: tuple[int, int, int]
  names: tuple[str, str, str]


# Dataset -> the NIR-R-G composite of its stored bands (0-based).
FALSE_COLOUR: Mapping[str, FalseColour] = {
    # Stored Sentinel-2 B1..B7, B10..B12: B8 is not kept, B7 (783 nm) is the reddest band.
    "s2s_eu": FalseColour((6, 3, 2), ("B7", "B4", "B3")),
    # Tiangong-2 VNIR bands ~45 nm apart from 403 nm.
    "s2s_cn": FalseColour((9, 6, 3), ("808nm", "673nm", "538nm")),
    # Stored B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12.
    "m2s_gl": FalseColour((6, 2, 1), ("B8", "B4", "B3")),
}


def default_false_colour(dataset: str, ms_channels: int) -> FalseColour:
  """The NIR-R-G composite of ``dataset``. The synthetic benchmark mirrors S2S_EU's band
  layout (3 red, 2 green, red edge from 4 on), so it shows band ``min(6, C - 1)``, 3, 2."""
  if dataset in FALSE_COLOUR:
    colour = FALSE_COLOUR[dataset]
  else:
    nir = min(6, ms_channels - 1)
    colour = FalseColour((nir, 3, 2), (f"band {nir}", "red", "green"))
  if max(colour.bands) >= ms_channels:
    raise ValueError(f"false-colour bands {colour.bands} of dataset {dataset!r} need more than "
                     f"the {ms_channels} MS channels given.")
  return colour


def false_colour(ms_images: Any, bands: Sequence[int],
                 percentiles: tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
  """(N, H, W, C) MS images -> (N, H, W, 3) composites in [0, 1].

  Band ``bands[k]`` becomes display channel ``k``, linearly mapped so that its
  ``percentiles[0]``-th percentile over the image is 0 and its ``percentiles[1]``-th is 1
  (then clipped). A constant band maps to 0.
  """
  images = validation.finite_array("ms_images", ms_images, ndim=4)
  bands = tuple(int(b) for b in bands)
  channels = images.shape[-1]
  if len(bands) != 3 or not all(0 <= b < channels for b in bands):
    raise ValueError(f"`false_colour_bands` must be three band indices in [0, {channels}) "
                     f"(the MS images have {channels} bands); got {bands}.")
  low, high = percentiles
  if not 0.0 <= low < high <= 100.0:
    raise ValueError(f"`percentiles` must satisfy 0 <= low < high <= 100; got {percentiles}.")
  selected = images[..., list(bands)]
  lo = np.percentile(selected, low, axis=(1, 2), keepdims=True)
  hi = np.percentile(selected, high, axis=(1, 2), keepdims=True)
  span = np.where(hi > lo, hi - lo, 1.0)
  return np.clip((selected - lo) / span, 0.0, 1.0)


def _display_rgb(rgb_images: Any) -> np.ndarray:
  images = np.asarray(rgb_images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"`rgb_images` must be (N, H, W, 3); got shape {images.shape}.")
  if images.dtype == np.uint8:
    return images.astype(np.float64) / 255.0
  images = validation.finite_array("rgb_images", images, ndim=4)
  if images.min() < 0.0 or images.max() > 1.0:
    raise ValueError("`rgb_images` must be raw uint8 images or floats in [0, 1]; got floats "
                     f"in [{images.min():.3g}, {images.max():.3g}] (undo the model "
                     "normalisation first).")
  return images


def plot_matched_pairs(rgb_images: Any, ms_images: Any, false_colour_bands: Sequence[int],
                       labels: Any, class_names: Sequence[str] | None = None, *,
                       band_names: Sequence[str] | None = None,
                       teacher_labels: Any = None, scores: Any = None,
                       score_name: str = "similarity", pairs_per_row: int = 4,
                       percentiles: tuple[float, float] = (2.0, 98.0),
                       title: str | None = None) -> Figure:
  """A grid of (student RGB, matched teacher MS in false colour) pairs.

  Args:
    rgb_images: (N, H, W, 3) student images, uint8 or floats in [0, 1].
    ms_images: (N, h, w, C) the matched teachers' raw MS images (any scale).
    false_colour_bands: three MS band indices shown as red, green, blue.
    labels: (N,) integer classes of the students.
    class_names: names of the class ids.
    band_names: names of the three displayed bands (default ``"band k"``).
    teacher_labels: (N,) classes of the teachers, if they may differ (shown when they do).
    scores: optional (N,) matching scores shown under each pair.
    score_name: what ``scores`` are.
    pairs_per_row: pairs per grid row.
    percentiles: the per-image, per-band stretch (see :func:`false_colour`).
    title: figure title.

  Returns:
    The figure.
  """
  rgb = _display_rgb(rgb_images)
  n = rgb.shape[0]
  ms = np.asarray(ms_images)
  if ms.ndim != 4 or ms.shape[0] != n:
    raise ValueError(f"`ms_images` must be (N, h, w, C) with N = {n} (one per student image); "
                     f"got shape {ms.shape}.")
  composite = false_colour(ms, false_colour_bands, percentiles)
  ys = validation.class_labels("labels", labels, n, length_of="`rgb_images`")
  yt = (ys if teacher_labels is None else validation.class_labels(
      "teacher_labels", teacher_labels, n, length_of="`rgb_images`"))
  names = validation.class_name_list(class_names, [ys, yt])
  shown_scores = None if scores is None else validation.finite_array("scores", scores, ndim=1)
  if shown_scores is not None and len(shown_scores) != n:
    raise ValueError(f"`scores` has {len(shown_scores)} entries but there are {n} pairs.")
  if pairs_per_row < 1:
    raise ValueError(f"`pairs_per_row` must be >= 1; got {pairs_per_row}.")
  bands = tuple(int(b) for b in false_colour_bands)
  band_label = "-".join(band_names) if band_names is not None else "-".join(
      f"b{b}" for b in bands)

  cols = min(pairs_per_row, n)
  rows = -(-n // cols)
  fig = Figure(figsize=(3.3 * cols, 2.1 * rows + 0.6), layout="constrained")
  # Two image columns per pair and a narrow spacer between pairs.
  grid = fig.add_gridspec(rows, 3 * cols - 1,
                          width_ratios=([1, 1, 0.12] * cols)[:3 * cols - 1])
  for index in range(n):
    row, col = divmod(index, cols)
    student_ax = fig.add_subplot(grid[row, 3 * col])
    teacher_ax = fig.add_subplot(grid[row, 3 * col + 1])
    student_ax.imshow(rgb[index], interpolation="nearest")
    teacher_ax.imshow(composite[index], interpolation="nearest")
    student_ax.set_title(f"{names[ys[index]]}\nstudent RGB", fontsize=9)
    teacher_title = "teacher MS" if yt[index] == ys[index] else f"teacher MS: {names[yt[index]]}"
    teacher_ax.set_title(f"{teacher_title}\n({band_label})", fontsize=9)
    if shown_scores is not None:
      student_ax.set_xlabel(f"{score_name} {shown_scores[index]:.2f}", fontsize=8)
    for ax in (student_ax, teacher_ax):
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle(title or f"Student RGB images and their matched teachers "
               f"(MS in false colour {band_label}, per-image "
               f"{percentiles[0]:g}-{percentiles[1]:g} percentile stretch)")
  return fig
