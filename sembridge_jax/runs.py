"""A run is a value: which student training it is (method, SemBridge on/off) and its seed.

Every table, results file, figure and benchmark cell names a run through `Run.name`,
and every run name read back from a workdir goes through `Run.parse`: there is no
other place where ``"+sembridge"`` is spelled or split off.

``Run("student_only")`` is the RGB student trained alone (cross-entropy only);
``Run("kd")`` is KD alone, with random same-class teachers; ``Run("kd", True)`` is
KD under SemBridge (SFM pairs, re-matching, ALIGN), i.e. SemBridge itself; any other
distillation method of `sembridge_jax.distill.losses` works the same way.
"""

from __future__ import annotations

from typing import NamedTuple

STUDENT_ALONE = "student_only"
SEMBRIDGE_SUFFIX = "+sembridge"
# How tables print the methods (the paper's spelling).
METHOD_LABELS = {"kd": "KD", "logits": "Logits", "rkd": "RKD", "dkd": "DKD", "lskd": "LSKD",
                 "ctkd": "CTKD", "distilvpr": "DistilVPR"}


class Run(NamedTuple):
  """One trained RGB student: ``method`` ("student_only" or a distillation method),
  whether SemBridge is on, and the seed."""
  method: str
  sembridge: bool = False
  seed: int = 0

  @property
  def name(self) -> str:
    """``"student_only"``, ``"kd"``, ``"kd+sembridge"``, ``"dkd+sembridge"``, ... (no seed)."""
    return f"{self.method}{SEMBRIDGE_SUFFIX}" if self.sembridge else self.method

  @property
  def is_distillation(self) -> bool:
    return self.method != STUDENT_ALONE

  @property
  def label(self) -> str:
    """The row label of results tables."""
    if not self.is_distillation:
      return "student alone (RGB)"
    method = METHOD_LABELS.get(self.method, self.method)
    if not self.sembridge:
      return f"{method}, random same-class pairs"
    return "SemBridge" if self.method == "kd" else f"{method} + SemBridge"

  @property
  def short_label(self) -> str:
    """``"dkd"`` / ``"dkd + SemBridge"``: the benchmark table's row names."""
    return f"{self.method} + SemBridge" if self.sembridge else self.method

  def with_seed(self, seed: int) -> "Run":
    return self._replace(seed=int(seed))

  @classmethod
  def parse(cls, name: str, seed: int = 0) -> "Run":
    """The inverse of `name`: ``"dkd+sembridge"`` -> ``Run("dkd", True, seed)``.

    Raises ValueError for a name that is not a run's (the method itself is checked
    against the registry by the config validator, not here: this module sits below
    every other layer).
    """
    sembridge = name.endswith(SEMBRIDGE_SUFFIX)
    method = name[:-len(SEMBRIDGE_SUFFIX)] if sembridge else name
    if not method or SEMBRIDGE_SUFFIX in method or "/" in method:
      raise ValueError(f"{name!r} is not a run name (method, optionally + {SEMBRIDGE_SUFFIX!r})")
    if method == STUDENT_ALONE and sembridge:
      raise ValueError(f"run name {name!r}: the student alone has no SemBridge variant")
    return cls(method, sembridge, int(seed))


def comparison_runs(method: str) -> tuple[Run, Run, Run]:
  """The pipeline's three students: alone, ``method`` alone, ``method`` + SemBridge."""
  return Run(STUDENT_ALONE), Run(method, False), Run(method, True)
