"""The distillation methods by name: the registry the trainer and the config read.

``DISTILL_METHODS`` maps each name to a :class:`DistillMethod`: a uniform loss
``loss(inputs: DistillInputs, state) -> scalar`` over the terms of
`sembridge_jax.distill.losses` (schedules included, so the trainer needs no per-method
branches), what it needs from the batch, its default CE/distillation weights when run
alone, and a factory for its extra trainable state (CTKD's temperature) or ``None``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
from flax import nnx

from sembridge_jax.distill.losses import (CTKDTemperature, ctkd, ctkd_reversal_strength,
                                          distilvpr, dkd, dkd_warmup_factor, kd, logits_mse,
                                          lskd, rkd)

class DistillInputs(NamedTuple):
  """What a distillation method may read from a batch (None where not provided)."""
  student_logits: jax.Array
  teacher_logits: jax.Array
  student_features: jax.Array | None = None  # pooled (B, 512)
  teacher_features: jax.Array | None = None
  labels: jax.Array | None = None             # (B,) integer classes
  epoch: jax.Array | float | None = None      # 0-based, may be fractional
  kd_temperature: float = 3.0                 # T of "kd" (config.distill.temperature)


class DistillMethod(NamedTuple):
  """A distillation baseline as the trainer sees it."""
  name: str
  loss: Callable[[DistillInputs, nnx.Module | None], jax.Array]
  needs: frozenset[str]      # subset of {"logits", "features", "labels", "epoch"}
  ce_weight: float           # weights when run alone: ce * CE + distill * loss
  distill_weight: float
  make_state: Callable[[nnx.Rngs], nnx.Module] | None = None  # extra trainable state


_FIELDS_OF_NEED = {
    "logits": ("student_logits", "teacher_logits"),
    "features": ("student_features", "teacher_features"),
    "labels": ("labels",),
    "epoch": ("epoch",),
}


def _checked(name: str, needs: frozenset[str],
             loss: Callable[[DistillInputs, nnx.Module | None], jax.Array]):
  def checked_loss(inputs: DistillInputs, state: nnx.Module | None = None) -> jax.Array:
    missing = [field for need in sorted(needs) for field in _FIELDS_OF_NEED[need]
               if getattr(inputs, field) is None]
    if missing:
      raise ValueError(f"distillation method {name!r} needs DistillInputs fields "
                       f"{missing}, which were None.")
    return loss(inputs, state)
  return checked_loss


def _method(name: str, needs: set[str], loss, *, ce_weight: float = 0.3,
            distill_weight: float = 0.7, make_state=None) -> DistillMethod:
  needs = frozenset(needs)
  return DistillMethod(name, _checked(name, needs, loss), needs, ce_weight,
                       distill_weight, make_state)


def _ctkd_loss(inputs: DistillInputs, state: nnx.Module | None) -> jax.Array:
  if not isinstance(state, CTKDTemperature):
    raise ValueError("distillation method 'ctkd' needs its CTKDTemperature state "
                     f"(from DISTILL_METHODS['ctkd'].make_state); got {type(state).__name__}.")
  temperature = state(ctkd_reversal_strength(inputs.epoch))
  return ctkd(inputs.student_logits, inputs.teacher_logits, temperature)


DISTILL_METHODS: dict[str, DistillMethod] = {
    method.name: method for method in (
        _method("kd", {"logits"},
                lambda i, _: kd(i.student_logits, i.teacher_logits, i.kd_temperature)),
        _method("logits", {"logits"},
                lambda i, _: logits_mse(i.student_logits, i.teacher_logits)),
        _method("rkd", {"features"},
                lambda i, _: rkd(i.student_features, i.teacher_features)),
        _method("dkd", {"logits", "labels", "epoch"},
                lambda i, _: dkd_warmup_factor(i.epoch)
                * dkd(i.student_logits, i.teacher_logits, i.labels)),
        _method("lskd", {"logits"},
                lambda i, _: lskd(i.student_logits, i.teacher_logits)),
        _method("ctkd", {"logits", "epoch"}, _ctkd_loss, ce_weight=0.1,
                distill_weight=0.9, make_state=lambda rngs: CTKDTemperature()),
        _method("distilvpr", {"features"},
                lambda i, _: distilvpr(i.student_features, i.teacher_features)),
    )
}


def get_method(name: str) -> DistillMethod:
  """The registered method ``name``; ValueError listing the known names otherwise."""
  try:
    return DISTILL_METHODS[name]
  except KeyError:
    raise ValueError(f"unknown distillation method {name!r}; known methods: "
                     f"{sorted(DISTILL_METHODS)}.") from None


def parse_methods(spec: str) -> tuple[str, ...]:
  if spec == "all":
    return tuple(DISTILL_METHODS)
  names = tuple(m.strip() for m in str(spec).split(","))
  for name in names:
    get_method(name)  # Raises with the list of known methods.
  return names
