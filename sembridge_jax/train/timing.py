"""Where a run's wall time goes: compilation, steps, input, evaluation, checkpoints.

`PhaseClock` adds up wall time per phase. Steps are asynchronous (a call returns before
the device has finished), so the trainer waits for the device inside ``"steps"`` before
it evaluates, saves or finishes; time spent in a phase is therefore that phase's own work,
and a device still busy with earlier steps counts as steps.

Phases (``PHASES``): ``compile`` (the first step of this process: tracing, compiling and
running it), ``steps``, ``input`` (the next batch: reading, augmenting, putting it on the
devices), ``evaluation`` (including its first compilation), ``checkpoint`` (the
synchronous part of a save), ``hooks`` (per-epoch task work such as re-matching).

`summary` returns the totals and the same totals after the first epoch, when compilation
and warm-up are over: the share of wall time spent in steps after the first epoch is the
number that says whether a run is bound by its steps or by everything around them.
"""

from __future__ import annotations

import contextlib
import time

PHASES = ("compile", "steps", "input", "evaluation", "checkpoint", "hooks")


class PhaseClock:
  """Wall seconds per phase, in total and after the first epoch."""

  def __init__(self):
    self.start = time.perf_counter()
    self.total = dict.fromkeys(PHASES, 0.0)
    self.after_first_epoch = dict.fromkeys(PHASES, 0.0)
    self.first_epoch_end: float | None = None
    self.epochs_ended = 0

  @contextlib.contextmanager
  def phase(self, name: str):
    if name not in self.total:
      raise ValueError(f"unknown phase {name!r}; phases: {PHASES}")
    begin = time.perf_counter()
    try:
      yield
    finally:
      elapsed = time.perf_counter() - begin
      self.total[name] += elapsed
      if self.first_epoch_end is not None:
        self.after_first_epoch[name] += elapsed

  def end_epoch(self) -> None:
    """Marks the end of an epoch; the first one this process ran splits "all" from
    "after the first epoch"."""
    self.epochs_ended += 1
    if self.first_epoch_end is None:
      self.first_epoch_end = time.perf_counter()

  def summary(self) -> dict[str, float]:
    """``time/<phase>_s``, ``time/wall_s``, ``time/other_s`` (logging, progress bar,
    Python), and with ``after_first_epoch/`` the same after the first epoch, plus
    ``time/steps_share_after_first_epoch`` (absent when the run had a single epoch)."""
    now = time.perf_counter()
    result: dict[str, float] = {}
    for prefix, phases, wall in (
        ("time/", self.total, now - self.start),
        ("time/after_first_epoch/", self.after_first_epoch,
         now - self.first_epoch_end if self.first_epoch_end is not None else 0.0)):
      result.update({f"{prefix}{name}_s": seconds for name, seconds in phases.items()})
      result[f"{prefix}wall_s"] = wall
      result[f"{prefix}other_s"] = max(0.0, wall - sum(phases.values()))
    wall_after = result["time/after_first_epoch/wall_s"]
    # A run of one epoch has no "after" worth a share (only its last sync and save).
    if self.epochs_ended >= 2 and wall_after > 0:
      result["time/steps_share_after_first_epoch"] = self.after_first_epoch["steps"] / wall_after
    return result
