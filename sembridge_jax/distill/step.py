"""The SemBridge distillation loss, as a loss function of the one trainer.

``L = w_ce * CE(student) + w_kd * D(student, teacher) + w_align * ALIGN``

where ``D`` is the configured method's distillation term (KD by default; any baseline
of `sembridge_jax.distill.losses`) and ALIGN the CORAL + optimal-transport alignment
of `sembridge_jax.alignment.AlignmentHead`. A baseline run *alone* uses its own
``ce/distill`` weights and no ALIGN.

The teacher is frozen by construction: its outputs come from the gallery (constant
device arrays passed to the step, wrapped in ``stop_gradient``), never from a network
whose parameters could be updated. In ``matching.mode == "step"`` the step also picks
each student's teacher itself: the same-class gallery sample minimising
``KL(p_t || p_s)`` for the current student logits (SFM part 3, per batch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sembridge_jax import matching
from sembridge_jax.alignment import AlignmentHead
from sembridge_jax.distill import methods
from sembridge_jax.distill.gallery import Gallery
from sembridge_jax.train.state import masked_cross_entropy
from sembridge_jax.train.trainer import LossFn, StepContext


class Distiller(nnx.Module):
  """What distillation trains: the student, the alignment modules, a method's own state."""

  def __init__(self, student: nnx.Module, align: AlignmentHead | None,
               method_state: nnx.Module | None):
    self.student = student
    self.align = align
    self.method_state = method_state


class LossWeights(NamedTuple):
  ce: float
  distill: float
  align: float


class StepOptions(NamedTuple):
  """Static settings of the step (changing one recompiles)."""
  method: str
  weights: LossWeights
  select_in_step: bool                 # matching.mode == "step"
  rematch_temperature: float
  steps_per_epoch: int
  kd_temperature: float                # T of the "kd" method (config.distill.temperature)
  align_kwargs: dict[str, Any]         # forwarded to AlignmentHead.__call__


def gather_teachers(gallery: Gallery, rows: jax.Array) -> tuple[jax.Array, dict, jax.Array]:
  """The matched teachers' logits, features and labels (constants: no gradient)."""
  take = lambda x: jax.lax.stop_gradient(jnp.take(x, rows, axis=0).astype(jnp.float32))
  return (take(gallery.logits), {"pooled": take(gallery.pooled), "tokens": take(gallery.tokens)},
          jnp.take(gallery.labels, rows, axis=0))


def distillation_loss(model: Distiller, batch: dict[str, jax.Array], gallery: Gallery,
                      epoch: jax.Array, options: StepOptions) -> tuple[jax.Array, dict]:
  """The loss of one batch and its terms (for logging)."""
  method = methods.get_method(options.method)
  student_logits, student_features = model.student(batch["image"])
  if options.select_in_step:
    rows = matching.select_teacher_by_kl(
        jax.lax.stop_gradient(student_logits), batch["label"], gallery.logits, gallery.labels,
        temperature=options.rematch_temperature)
  else:
    rows = batch["teacher_row"]
  teacher_logits, teacher_features, teacher_labels = gather_teachers(gallery, rows)

  ce = masked_cross_entropy(student_logits, batch["label"], batch["mask"])
  distill = method.loss(methods.DistillInputs(
      student_logits=student_logits, teacher_logits=teacher_logits,
      student_features=student_features["pooled"], teacher_features=teacher_features["pooled"],
      labels=batch["label"], epoch=epoch, kd_temperature=options.kd_temperature),
      model.method_state)
  loss = options.weights.ce * ce + options.weights.distill * distill
  terms = {"ce": ce, "distill": distill,
           "accuracy": (student_logits.argmax(-1) == batch["label"]).mean()}
  if model.align is not None:
    align, align_terms = model.align(student_features, teacher_features, batch["label"],
                                     teacher_labels, **options.align_kwargs)
    loss = loss + options.weights.align * align
    terms.update(align=align, coral_attention=align_terms.coral_attention,
                 coral_pooled=align_terms.coral_pooled, ot=align_terms.ot,
                 sinkhorn_iters=align_terms.sinkhorn_iters,
                 sinkhorn_converged=align_terms.sinkhorn_converged.astype(jnp.float32))
  terms["loss"] = loss
  terms["teacher_same_class"] = (teacher_labels == batch["label"]).mean()
  return loss, terms


def make_distillation_loss(options: StepOptions) -> LossFn:
  """``loss_fn(model, batch, context)`` for `sembridge_jax.train.trainer`: the gallery
  is the step's constant (replicated on every device), the epoch (fractional, for the
  methods' warm-ups) follows from the step count."""

  def loss_fn(model: Distiller, batch: dict[str, jax.Array], context: StepContext):
    epoch = context.step.astype(jnp.float32) / options.steps_per_epoch
    return distillation_loss(model, batch, context.constants, epoch, options)

  return loss_fn


def student_logits(model: Distiller, images: jax.Array) -> jax.Array:
  return model.student(images)[0]
