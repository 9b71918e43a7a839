r"""Distillation terms of the seven baselines (their registry: `sembridge_jax.distill.methods`).

Every loss is a pure, jit-safe function of arrays that returns the distillation
term alone (no cross-entropy): a scalar (at least float32) averaged over the
batch, with the constants of METHOD section 3. Teacher inputs are wrapped in ``stop_gradient``:
the teacher is frozen. ``p = softmax(z / T)`` throughout.

* KD        ``KL(p_t || p_s)`` at T = 3, batch mean, no T^2 (SemBridge's setting).
* Logits    ``0.01 * mean((z_s - z_t)^2)``.
* RKD       Park et al. 2019 on pooled features: distance term (pairwise distances
            divided by their mean over positive entries) and angle term (cosines of
            the angles ``e_j - e_i, e_k - e_i``), each smooth-L1 against the
            teacher's, ``0.1 * (25 * distance + 50 * angle)``.
* DKD       Zhao et al. 2022: ``alpha * TCKD + beta * NCKD``, both KL terms times
            T^2 at T = 4. TCKD compares the binary (target, non-target) masses;
            NCKD the distributions over the non-target classes. The linear
            warm-up is :func:`dkd_warmup_factor`.
* LSKD      Sun et al. 2024: z-score each logit vector,
            ``(z - mean) / (std_{n-1} + 1e-7)``, then KL at T = 3 times T^2.
* CTKD      Li et al. 2023: KL at a learnable global temperature
            ``T = 1 + 20 sigmoid(theta)`` times T^2; ``theta`` is trained through a
            gradient-reversal layer (it *maximises* the KL the student minimises)
            whose strength :func:`ctkd_reversal_strength` rises 0 -> 1 by a cosine
            over the first 5 epochs. The trainer weighs it 0.1 CE + 0.9 KD(T).
* DistilVPR Wang et al., AAAI 2024 (arXiv 2312.10616): relational distillation
            in Euclidean, spherical (cosine) and hyperbolic geometry by "self-agents"
            and "cross-agents". What we take, from the authors' released code
            (github.com/sijieaaa/DistilVPR: ``compute_distil_loss.py``,
            ``selfagent/rkdg.py``, ``tools/options.py`` defaults and the README run
            configuration; curvature c = 0.1), applied to the pooled embeddings:

            self-agent (raw embeddings ``e``; teacher side constant), weight 1:
              RKD distance + RKD angle + hyperbolic RKD, each weight 1, where the
              hyperbolic term maps ``e`` into the Poincare ball (``expmap0`` at the
              origin, then projection to radius ``(1 - 1e-3)/sqrt(c)``), takes the
              pairwise geodesic distances, divides them by their mean over
              positive entries and applies smooth-L1 to the teacher's;
            cross-agent (L2-normalised embeddings ``u``), weight 0.1 each:
              ``MSE(R_ss, stop_gradient(R_st))`` for three relations R: Euclidean
              distance, cosine similarity and Poincare geodesic distance, where
              ``R_ss[i, j] = R(u^s_i, u^s_j)`` and ``R_st[i, j] = R(u^s_i, u^t_j)``:
              the student's relations among its own samples are pulled towards its
              relations with its paired teachers ("st2ss"; the code's "tt2st"
              terms default to weight 0 and are left out).

            The README's boreas run uses the self-agent weight 1 (oxford: 10).
            The released distance branch builds the transpose ``|u^s_j - u^t_i|``
            of our cross matrix; since ``R_ss`` is symmetric the MSE and its
            gradient are the same either way. Departure: the Moebius addition has
            no ``+1e-5`` in its denominator (we guard norms at zero instead).
            The Poincare distance is computed through Moebius addition,
            ``d_c(x, y) = 2/sqrt(c) artanh(sqrt(c) ||(-x) (+)_c y||)``, which equals
            the closed form ``arcosh(1 + 2c|x-y|^2 / ((1-c|x|^2)(1-c|y|^2)))/sqrt(c)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "CTKDTemperature",
    "ctkd",
    "ctkd_reversal_strength",
    "distilvpr",
    "dkd",
    "dkd_warmup_factor",
    "gradient_reversal",
    "kd",
    "logits_mse",
    "lskd",
    "mobius_add",
    "poincare_distance_matrix",
    "rkd",
    "to_poincare_ball",
]

_HIGHEST = jax.lax.Precision.HIGHEST
_TINY = 1e-12  # squared-norm floor, as RKD's clamp(min=1e-12)


# ----------------------------------------------------------------- helpers


def _student_teacher(student: jax.Array, teacher: jax.Array,
                     names: tuple[str, str]) -> tuple[jax.Array, jax.Array]:
  """At-least-float32 copies, teacher detached, shapes checked."""
  if student.shape != teacher.shape:
    raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same shape; got "
                     f"{student.shape} and {teacher.shape}.")
  dtype = jnp.promote_types(jnp.result_type(student, teacher), jnp.float32)
  return student.astype(dtype), jax.lax.stop_gradient(teacher).astype(dtype)


def _flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def _norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
  """Euclidean norm, exactly 0 at x = 0, with gradient 0 there instead of NaN."""
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
  positive = squared > 0
  # The double `where` keeps sqrt's infinite derivative at 0 out of the graph.
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _unit(x: jax.Array) -> jax.Array:
  """``x / max(||x||, 1e-12)`` along the last axis (PyTorch's F.normalize)."""
  return x / jnp.maximum(_norm(x, keepdims=True), 1e-12)


def _kl_rows(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """``sum_c p (log p - log q)`` per row, with ``0 log 0 = 0``."""
  p = jnp.exp(log_p)
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def _kd_at(student_logits: jax.Array, teacher_logits: jax.Array,
           temperature: jax.Array | float) -> jax.Array:
  """Batch-mean ``KL(softmax(t/T) || softmax(s/T))``, no T^2."""
  log_p_s = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_p_t = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  return _kl_rows(log_p_t, log_p_s).mean()


def _smooth_l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """PyTorch's smooth_l1_loss, beta 1, mean reduction."""
  diff = jnp.abs(x - y)
  return jnp.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5).mean()


def _mean_positive(x: jax.Array) -> jax.Array:
  """``x[x > 0].mean()`` with static shapes."""
  positive = x > 0
  return jnp.sum(jnp.where(positive, x, 0.0)) / jnp.maximum(positive.sum(), 1)


def _pairwise_distances(e: jax.Array) -> jax.Array:
  """RKD's pdist: sqrt(clamp(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, 1e-12)), zero diagonal."""
  squared = jnp.sum(e * e, axis=-1)
  gram = jnp.matmul(e, e.T, precision=_HIGHEST)
  d = jnp.sqrt(jnp.maximum(squared[:, None] + squared[None, :] - 2.0 * gram, _TINY))
  return jnp.where(jnp.eye(e.shape[0], dtype=bool), 0.0, d)


def _rkd_distance(student: jax.Array, teacher: jax.Array) -> jax.Array:
  d_s = _pairwise_distances(student)
  d_t = _pairwise_distances(teacher)
  return _smooth_l1(d_s / _mean_positive(d_s), d_t / _mean_positive(d_t))


def _angles(e: jax.Array) -> jax.Array:
  """(B, B, B) cosines of the angle at e_i between e_j and e_k."""
  unit = _unit(e[None, :, :] - e[:, None, :])  # [i, j] = (e_j - e_i) / |e_j - e_i|
  return jnp.einsum("ijd,ikd->ijk", unit, unit, precision=_HIGHEST)


def _rkd_angle(student: jax.Array, teacher: jax.Array) -> jax.Array:
  return _smooth_l1(_angles(student), _angles(teacher))


# ------------------------------------------------------------- logit losses


def kd(student_logits: jax.Array, teacher_logits: jax.Array,
       temperature: float = 3.0) -> jax.Array:
  """``KL(softmax(t/T) || softmax(s/T))``, summed over classes, batch mean, no T^2."""
  s, t = _student_teacher(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
  return _kd_at(s, t, temperature)


def logits_mse(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """``0.01 * mean((s - t)^2)`` over batch and classes."""
  s, t = _student_teacher(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
  return 0.01 * jnp.mean(jnp.square(s - t))


def dkd(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
        alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> jax.Array:
  """Decoupled KD ``(alpha TCKD + beta NCKD) T^2``, batch mean, no warm-up.

  Args:
    student_logits, teacher_logits: (B, K).
    labels: (B,) integer target classes.
  """
  s, t = _student_teacher(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
  if labels.shape != s.shape[:1]:
    raise ValueError(f"`labels` must be (B,) = {s.shape[:1]} integer classes; got "
                     f"shape {labels.shape}.")
  target = jax.nn.one_hot(labels, s.shape[-1], dtype=bool)
  log_p_s = jax.nn.log_softmax(s / temperature, axis=-1)
  log_p_t = jax.nn.log_softmax(t / temperature, axis=-1)

  def binary(log_p: jax.Array) -> jax.Array:
    # log of (p_target, p_non_target), the latter as a stable logsumexp.
    log_target = jnp.sum(jnp.where(target, log_p, 0.0), axis=-1)
    log_other = jax.nn.logsumexp(jnp.where(target, -jnp.inf, log_p), axis=-1)
    return jnp.stack([log_target, log_other], axis=-1)

  tckd = _kl_rows(binary(log_p_t), binary(log_p_s)).mean()
  # Distributions over the non-target classes only: the target logit is removed
  # by a -1000 offset (DKD's own trick; exp(-1000) underflows to exactly 0).
  log_q_s = jax.nn.log_softmax(s / temperature - 1000.0 * target, axis=-1)
  log_q_t = jax.nn.log_softmax(t / temperature - 1000.0 * target, axis=-1)
  nckd = _kl_rows(log_q_t, log_q_s).mean()
  return (alpha * tckd + beta * nckd) * temperature**2


def dkd_warmup_factor(epoch: jax.Array | float, warmup_epochs: int = 20) -> jax.Array:
  """DKD's linear warm-up ``min((epoch + 1) / warmup_epochs, 1)``, epoch 0-based.

  ``epoch + 1`` is the 1-based epoch of the reference implementation, so the
  first epoch trains at ``1/20`` and epoch index 19 at full weight.
  """
  return jnp.minimum((jnp.asarray(epoch, jnp.float32) + 1.0) / warmup_epochs, 1.0)


def _standardise(logits: jax.Array) -> jax.Array:
  std = jnp.std(logits, axis=-1, keepdims=True, ddof=1)
  return (logits - logits.mean(axis=-1, keepdims=True)) / (std + 1e-7)


def lskd(student_logits: jax.Array, teacher_logits: jax.Array,
         temperature: float = 3.0) -> jax.Array:
  """KD on z-scored logits (std with the n-1 correction, + 1e-7) at T, times T^2."""
  s, t = _student_teacher(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
  return _kd_at(_standardise(s), _standardise(t), temperature) * temperature**2


# --------------------------------------------------------------------- CTKD


@jax.custom_vjp
def _reverse(x: jax.Array, strength: jax.Array) -> jax.Array:
  return x


def _reverse_fwd(x, strength):
  return x, strength


def _reverse_bwd(strength, cotangent):
  return -strength * cotangent, jnp.zeros_like(strength)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: jax.Array, strength: jax.Array | float) -> jax.Array:
  """Identity forward; multiplies the incoming gradient by ``-strength`` backward."""
  x = jnp.asarray(x)
  return _reverse(x, jnp.asarray(strength, x.dtype))


def ctkd_reversal_strength(epoch: jax.Array | float, ramp_epochs: int = 5) -> jax.Array:
  """CTKD's cosine ramp ``(1 - cos(pi * min(epoch + 1, E) / E)) / 2``, epoch 0-based.

  Reaches 1 at epoch index ``E - 1`` (the reference counts epochs from 1).
  """
  progress = jnp.minimum(jnp.asarray(epoch, jnp.float32) + 1.0, ramp_epochs) / ramp_epochs
  return 0.5 * (1.0 - jnp.cos(jnp.pi * progress))


class CTKDTemperature(nnx.Module):
  """CTKD's global learnable temperature ``t_start + t_range * sigmoid(theta)``.

  ``theta`` starts at 1 as in the reference (T = 1 + 20 sigmoid(1) ~ 15.6).
  Calling the module routes ``theta`` through :func:`gradient_reversal`.
  """

  def __init__(self, *, initial_logit: float = 1.0, t_start: float = 1.0,
               t_range: float = 20.0):
    self.logit = nnx.Param(jnp.asarray(initial_logit, jnp.float32))
    self.t_start = t_start
    self.t_range = t_range

  def temperature(self) -> jax.Array:
    """The current temperature, for logging (no gradient reversal)."""
    return self.t_start + self.t_range * jax.nn.sigmoid(self.logit[...])

  def __call__(self, reversal_strength: jax.Array | float) -> jax.Array:
    theta = gradient_reversal(self.logit[...], reversal_strength)
    return self.t_start + self.t_range * jax.nn.sigmoid(theta)


def ctkd(student_logits: jax.Array, teacher_logits: jax.Array,
         temperature: jax.Array | float) -> jax.Array:
  """CTKD's distillation term ``KL(p_t || p_s) * T^2`` at a (learnable) temperature.

  The gradient with respect to ``temperature`` flows (it is the CTKD parameter).
  """
  s, t = _student_teacher(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
  return _kd_at(s, t, temperature) * jnp.square(temperature)


# ---------------------------------------------------------------------- RKD


def rkd(student_features: jax.Array, teacher_features: jax.Array, *,
        distance_weight: float = 25.0, angle_weight: float = 50.0,
        scale: float = 0.1) -> jax.Array:
  """``scale * (distance_weight * L_distance + angle_weight * L_angle)`` (RKD).

  Args:
    student_features, teacher_features: (B, ...) pooled features; flattened.
  """
  s, t = _student_teacher(_flatten(student_features), _flatten(teacher_features),
                          ("student_features", "teacher_features"))
  return scale * (distance_weight * _rkd_distance(s, t) + angle_weight * _rkd_angle(s, t))


# ---------------------------------------------------------------- DistilVPR


def mobius_add(x: jax.Array, y: jax.Array, curvature: float) -> jax.Array:
  """Moebius addition ``x (+)_c y`` in the Poincare ball of curvature ``-c``."""
  c = curvature
  xy = jnp.sum(x * y, axis=-1, keepdims=True)
  x2 = jnp.sum(x * x, axis=-1, keepdims=True)
  y2 = jnp.sum(y * y, axis=-1, keepdims=True)
  numerator = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
  return numerator / (1 + 2 * c * xy + c * c * x2 * y2)


def to_poincare_ball(x: jax.Array, curvature: float) -> jax.Array:
  """``project(expmap0(x))``: the exponential map at the origin, then clipping to
  radius ``(1 - 1e-3) / sqrt(c)`` (hyptorch's ``ToPoincare``, as DistilVPR)."""
  sqrt_c = math.sqrt(curvature)
  norm = jnp.maximum(_norm(x, keepdims=True), 1e-5)
  mapped = jnp.tanh(sqrt_c * norm) * x / (sqrt_c * norm)
  max_norm = (1.0 - 1e-3) / sqrt_c
  mapped_norm = jnp.maximum(_norm(mapped, keepdims=True), 1e-5)
  return jnp.where(mapped_norm > max_norm, mapped / mapped_norm * max_norm, mapped)


def poincare_distance_matrix(x: jax.Array, y: jax.Array, curvature: float) -> jax.Array:
  """``D[i, j] = 2/sqrt(c) artanh(sqrt(c) ||(-x_i) (+)_c y_j||)`` for points in the ball."""
  sqrt_c = math.sqrt(curvature)
  difference = mobius_add(-x[:, None, :], y[None, :, :], curvature)
  argument = jnp.clip(sqrt_c * _norm(difference), 0.0, 1.0 - 1e-5)
  return 2.0 / sqrt_c * jnp.arctanh(argument)


def _euclidean_distance_matrix(x: jax.Array, y: jax.Array) -> jax.Array:
  return _norm(x[:, None, :] - y[None, :, :])


def _cosine_matrix(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.matmul(_unit(x), _unit(y).T, precision=_HIGHEST)


def _without_diagonal(d: jax.Array) -> jax.Array:
  # (-x) (+) x rounds to ~1e-8, not 0; a self-distance matrix has a zero diagonal.
  return jnp.where(jnp.eye(d.shape[0], dtype=bool), 0.0, d)


def _geodesic_rkd(student: jax.Array, teacher: jax.Array, curvature: float) -> jax.Array:
  s = to_poincare_ball(student, curvature)
  t = to_poincare_ball(teacher, curvature)
  g_s = _without_diagonal(poincare_distance_matrix(s, s, curvature))
  g_t = _without_diagonal(poincare_distance_matrix(t, t, curvature))
  return _smooth_l1(g_s / _mean_positive(g_s), g_t / _mean_positive(g_t))


def distilvpr(student_embeddings: jax.Array, teacher_embeddings: jax.Array, *,
              curvature: float = 0.1, self_agent_weight: float = 1.0,
              cross_agent_weight: float = 0.1) -> jax.Array:
  """DistilVPR's Euclidean + hyperbolic relational distillation (module docstring).

  Args:
    student_embeddings, teacher_embeddings: (B, d) pooled embeddings.
    curvature: ``c`` of the Poincare ball (the authors' default 0.1).
    self_agent_weight: weight of the RKD-style self-agent sum.
    cross_agent_weight: weight of each of the three cross-agent MSE terms.
  """
  s, t = _student_teacher(_flatten(student_embeddings), _flatten(teacher_embeddings),
                          ("student_embeddings", "teacher_embeddings"))
  self_agent = (_rkd_distance(s, t) + _rkd_angle(s, t)
                + _geodesic_rkd(s, t, curvature))

  u_s, u_t = _unit(s), _unit(t)
  b_s = to_poincare_ball(u_s, curvature)
  b_t = to_poincare_ball(u_t, curvature)
  sg = jax.lax.stop_gradient
  cross_agent = (
      jnp.mean(jnp.square(_euclidean_distance_matrix(u_s, u_s)
                          - sg(_euclidean_distance_matrix(u_s, u_t))))
      + jnp.mean(jnp.square(_cosine_matrix(u_s, u_s) - sg(_cosine_matrix(u_s, u_t))))
      + jnp.mean(jnp.square(poincare_distance_matrix(b_s, b_s, curvature)
                            - sg(poincare_distance_matrix(b_s, b_t, curvature)))))
  return self_agent_weight * self_agent + cross_agent_weight * cross_agent
