"""Distillation losses against independent NumPy evaluations, CTKD, DistilVPR, registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sembridge_jax.distill import losses, methods

B, K, D = 6, 5, 7


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def _smooth_l1(x, y):
  d = np.abs(x - y)
  return np.mean(np.where(d < 1, 0.5 * d * d, d - 0.5))


def _distances(e):
  return np.linalg.norm(e[:, None] - e[None], axis=-1)


def _normalised_distances(e):
  d = _distances(e)
  return d / d[~np.eye(len(e), dtype=bool)].mean()


def _angles(e):
  n = len(e)
  out = np.zeros((n, n, n))
  for i in range(n):
    for j in range(n):
      for k in range(n):
        if j != i and k != i:
          u, v = e[j] - e[i], e[k] - e[i]
          out[i, j, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
  return out


def _poincare_closed_form(x, y, c):
  """arcosh(1 + 2c|x-y|^2 / ((1-c|x|^2)(1-c|y|^2))) / sqrt(c)."""
  squared = np.sum((x[:, None] - y[None]) ** 2, -1)
  denominator = (1 - c * np.sum(x**2, -1))[:, None] * (1 - c * np.sum(y**2, -1))[None]
  return np.arccosh(1 + 2 * c * squared / denominator) / np.sqrt(c)


def _to_ball(x, c):
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  mapped = np.tanh(np.sqrt(c) * norm) * x / (np.sqrt(c) * norm)
  radius = (1 - 1e-3) / np.sqrt(c)
  mapped_norm = np.linalg.norm(mapped, axis=-1, keepdims=True)
  return np.where(mapped_norm > radius, mapped / mapped_norm * radius, mapped)


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  return {
      "s": (2.0 * rng.normal(size=(B, K))).astype(np.float32),
      "t": (2.0 * rng.normal(size=(B, K))).astype(np.float32),
      "y": rng.integers(0, K, B),
      "fs": rng.normal(size=(B, D)).astype(np.float32),
      "ft": (3.0 * rng.normal(size=(B, D))).astype(np.float32),
  }


def test_kd(batch):
  s, t = batch["s"].astype(np.float64), batch["t"].astype(np.float64)
  expected = _kl(_softmax(t / 3), _softmax(s / 3)).mean()
  np.testing.assert_allclose(losses.kd(batch["s"], batch["t"]), expected, rtol=1e-5)


def test_logits_mse(batch):
  expected = 0.01 * np.mean((batch["s"].astype(np.float64) - batch["t"]) ** 2)
  np.testing.assert_allclose(losses.logits_mse(batch["s"], batch["t"]), expected, rtol=1e-6)


def test_rkd(batch):
  fs, ft = batch["fs"].astype(np.float64), batch["ft"].astype(np.float64)
  distance = _smooth_l1(_normalised_distances(fs), _normalised_distances(ft))
  angle = _smooth_l1(_angles(fs), _angles(ft))
  expected = 0.1 * (25 * distance + 50 * angle)
  np.testing.assert_allclose(losses.rkd(batch["fs"], batch["ft"]), expected, rtol=1e-5)


def test_dkd(batch):
  s, t, y, T = batch["s"].astype(np.float64), batch["t"].astype(np.float64), batch["y"], 4.0
  total = 0.0
  for i in range(B):
    p_s, p_t = _softmax(s[i] / T), _softmax(t[i] / T)
    binary_s = np.array([p_s[y[i]], 1 - p_s[y[i]]])
    binary_t = np.array([p_t[y[i]], 1 - p_t[y[i]]])
    others_s = _softmax(np.delete(s[i], y[i]) / T)  # the non-target classes alone
    others_t = _softmax(np.delete(t[i], y[i]) / T)
    total += 1.0 * _kl(binary_t, binary_s) + 8.0 * _kl(others_t, others_s)
  expected = total / B * T**2
  np.testing.assert_allclose(losses.dkd(batch["s"], batch["t"], jnp.asarray(y)), expected,
                             rtol=1e-5)


def test_lskd(batch):
  def z_score(z):
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)
  s, t = z_score(batch["s"].astype(np.float64)), z_score(batch["t"].astype(np.float64))
  expected = _kl(_softmax(t / 3), _softmax(s / 3)).mean() * 9
  np.testing.assert_allclose(losses.lskd(batch["s"], batch["t"]), expected, rtol=1e-5)


def test_ctkd_value_and_reversed_temperature_gradient(batch):
  s, t = jnp.asarray(batch["s"]), jnp.asarray(batch["t"])
  state = losses.CTKDTemperature()
  temperature = float(state.temperature())
  np.testing.assert_allclose(temperature, 1 + 20 / (1 + np.exp(-1.0)), rtol=1e-6)
  expected = _kl(_softmax(batch["t"].astype(np.float64) / temperature),
                 _softmax(batch["s"].astype(np.float64) / temperature)).mean() * temperature**2
  np.testing.assert_allclose(losses.ctkd(s, t, temperature), expected, rtol=1e-5)

  def through_reversal(state, strength):
    return losses.ctkd(s, t, state(strength))

  def plain(logit):  # the same loss with no gradient reversal
    return losses.ctkd(s, t, 1 + 20 * jax.nn.sigmoid(logit))

  plain_gradient = float(jax.grad(plain)(state.logit[...]))
  assert plain_gradient != 0.0
  for strength in (0.0, 0.3, 1.0):
    reversed_gradient = float(nnx.grad(through_reversal)(state, strength).logit[...])
    np.testing.assert_allclose(reversed_gradient, -strength * plain_gradient, rtol=1e-5,
                               atol=1e-12)
  # The student's gradient is not reversed.
  np.testing.assert_allclose(
      jax.grad(lambda x: losses.ctkd(x, t, state(1.0)))(s),
      jax.grad(lambda x: losses.ctkd(x, t, temperature))(s), rtol=1e-5)


def test_schedules():
  np.testing.assert_allclose(losses.dkd_warmup_factor(np.arange(0, 25, 6)),
                             [1 / 20, 7 / 20, 13 / 20, 19 / 20, 1.0], rtol=1e-6)
  strength = losses.ctkd_reversal_strength(np.array([0, 2, 4, 10]))
  ramp = lambda epoch: (1 - np.cos(np.pi * (epoch + 1) / 5)) / 2  # noqa: E731
  np.testing.assert_allclose(strength, [ramp(0), ramp(2), 1.0, 1.0], rtol=1e-6)
  assert np.all(np.diff(losses.ctkd_reversal_strength(np.linspace(-1, 4, 11))) >= 0)


def test_poincare_distance_equals_the_closed_form():
  rng = np.random.default_rng(1)
  c = 0.1
  x = _to_ball(3 * rng.normal(size=(5, 4)), c)   # includes points near the boundary
  y = _to_ball(0.5 * rng.normal(size=(3, 4)), c)
  np.testing.assert_allclose(losses.to_poincare_ball(jnp.asarray(3 * rng.normal(size=(2, 4))),
                                                     c).shape, (2, 4))
  assert np.all(np.linalg.norm(x, axis=-1) < 1 / np.sqrt(c))
  with jax.enable_x64(True):
    np.testing.assert_allclose(losses.poincare_distance_matrix(jnp.asarray(x), jnp.asarray(y), c),
                               _poincare_closed_form(x, y, c), rtol=1e-8)
  np.testing.assert_allclose(losses.to_poincare_ball(jnp.asarray(x[:2] / 10), c),
                             _to_ball(x[:2] / 10, c), rtol=1e-5)


def test_distilvpr_matches_numpy(batch):
  fs, ft, c = batch["fs"].astype(np.float64), batch["ft"].astype(np.float64), 0.1

  def geodesic(e):
    ball = _to_ball(e, c)
    g = _poincare_closed_form(ball, ball, c)
    np.fill_diagonal(g, 0.0)
    return g / g[~np.eye(len(e), dtype=bool)].mean()

  self_agent = (_smooth_l1(_normalised_distances(fs), _normalised_distances(ft))
                + _smooth_l1(_angles(fs), _angles(ft)) + _smooth_l1(geodesic(fs), geodesic(ft)))
  us = fs / np.linalg.norm(fs, axis=-1, keepdims=True)
  ut = ft / np.linalg.norm(ft, axis=-1, keepdims=True)
  bs, bt = _to_ball(us, c), _to_ball(ut, c)
  cross_euclid = np.linalg.norm(us[:, None] - ut[None], axis=-1)
  self_ball = _poincare_closed_form(bs, bs, c)
  np.fill_diagonal(self_ball, 0.0)
  cross_agent = (np.mean((_distances(us) - cross_euclid) ** 2)
                 + np.mean((us @ us.T - us @ ut.T) ** 2)
                 + np.mean((self_ball - _poincare_closed_form(bs, bt, c)) ** 2))
  expected = self_agent + 0.1 * cross_agent
  np.testing.assert_allclose(losses.distilvpr(batch["fs"], batch["ft"]), expected, rtol=1e-4)


def _inputs(batch, **overrides):
  values = dict(student_logits=jnp.asarray(batch["s"]), teacher_logits=jnp.asarray(batch["t"]),
                student_features=jnp.asarray(batch["fs"]),
                teacher_features=jnp.asarray(batch["ft"]), labels=jnp.asarray(batch["y"]),
                epoch=jnp.asarray(2.0))
  values.update(overrides)
  return methods.DistillInputs(**values)


@pytest.mark.parametrize("name", sorted(methods.DISTILL_METHODS))
def test_registry_methods_are_jittable_with_finite_gradients(batch, name):
  method = methods.get_method(name)
  state = method.make_state(nnx.Rngs(0)) if method.make_state else None
  # Duplicate rows: zero distances must not produce NaN gradients.
  features = jnp.asarray(batch["fs"]).at[1].set(batch["fs"][0])
  inputs = _inputs(batch, student_features=features)

  @nnx.jit
  def value_and_grads(state, inputs):
    def loss_fn(student_logits, student_features, state):
      return method.loss(inputs._replace(student_logits=student_logits,
                                         student_features=student_features), state)
    return nnx.value_and_grad(loss_fn, argnums=(0, 1))(inputs.student_logits,
                                                        inputs.student_features, state)

  value, grads = value_and_grads(state, inputs)
  assert value.shape == () and np.isfinite(value)
  assert all(np.isfinite(g).all() for g in grads)
  used = grads[0] if "logits" in method.needs else grads[1]
  assert np.abs(used).max() > 0
  assert (method.ce_weight, method.distill_weight) == ((0.1, 0.9) if name == "ctkd" else (0.3, 0.7))


def test_registry_matches_the_plain_functions(batch):
  inputs = _inputs(batch)
  np.testing.assert_allclose(methods.get_method("kd").loss(inputs),
                             losses.kd(inputs.student_logits, inputs.teacher_logits))
  np.testing.assert_allclose(
      methods.get_method("dkd").loss(inputs),
      3 / 20 * losses.dkd(inputs.student_logits, inputs.teacher_logits, inputs.labels),
      rtol=1e-6)


def test_registry_rejects_unknown_names_and_missing_inputs(batch):
  with pytest.raises(ValueError) as error:
    methods.get_method("fitnet")
  for name in ("kd", "logits", "rkd", "dkd", "lskd", "ctkd", "distilvpr"):
    assert repr(name) in str(error.value)
  with pytest.raises(ValueError, match="labels"):
    methods.get_method("dkd").loss(_inputs(batch, labels=None))
  with pytest.raises(ValueError, match="CTKDTemperature"):
    methods.get_method("ctkd").loss(_inputs(batch), None)


def test_teacher_receives_no_gradient(batch):
  s, t = jnp.asarray(batch["s"]), jnp.asarray(batch["t"])
  for fn in (losses.kd, losses.logits_mse, losses.lskd):
    assert not np.any(jax.grad(lambda t: fn(s, t))(t))
  fs, ft = jnp.asarray(batch["fs"]), jnp.asarray(batch["ft"])
  for fn in (losses.rkd, losses.distilvpr):
    assert not np.any(jax.grad(lambda t: fn(fs, t))(ft))


def test_kd_method_uses_the_configured_temperature(batch):
  """config.distill.temperature reaches the "kd" loss (it was once silently ignored)."""
  from sembridge_jax.distill import distiller
  from sembridge_jax.runs import Run
  from conftest import tiny_config
  kd = methods.get_method("kd")
  s, t = jnp.asarray(batch["s"]), jnp.asarray(batch["t"])
  for temperature in (1.0, 3.0, 6.0):
    np.testing.assert_allclose(kd.loss(_inputs(batch, kd_temperature=temperature)),
                               losses.kd(s, t, temperature), rtol=1e-6)
  assert not np.isclose(kd.loss(_inputs(batch, kd_temperature=1.0)),
                        kd.loss(_inputs(batch, kd_temperature=6.0)))
  config = tiny_config()
  config.distill.temperature = 5.0
  assert distiller.step_options(config, Run("kd", True), 3).kd_temperature == 5.0
