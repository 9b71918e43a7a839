"""The SSL matcher: projection head structure, Matcher wiring, and the loss formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from sembridge_jax.matching import Matcher, ProjectionHead, matcher_loss


def reference_matcher_loss(e_rgb, e_ms, tau):
  """METHOD's formula written out element by element in float64."""
  e_rgb, e_ms = np.asarray(e_rgb, np.float64), np.asarray(e_ms, np.float64)
  n = len(e_rgb)
  logits = np.array([[e_rgb[i] @ e_ms[j] / tau for j in range(n)] for i in range(n)])
  similarity = np.array([[(e_ms[i] @ e_ms[j] + e_rgb[i] @ e_rgb[j]) / 2 * tau
                          for j in range(n)] for i in range(n)])
  targets = np.exp(similarity) / np.exp(similarity).sum(axis=1, keepdims=True)
  rows = [-sum(targets[i, j] * (logits[i, j] - np.log(np.exp(logits[i]).sum()))
               for j in range(n)) for i in range(n)]
  # Column j: log-softmax over the RGB axis i, weighted by targets.T[j, i] = targets[i, j].
  columns = [-sum(targets[i, j] * (logits[i, j] - np.log(np.exp(logits[:, j]).sum()))
                  for i in range(n)) for j in range(n)]
  return np.mean([(r + c) / 2 for r, c in zip(rows, columns)])


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_matcher_loss_equals_numpy_formula(tau):
  rng = np.random.default_rng(0)
  e_rgb = rng.standard_normal((6, 4)).astype(np.float32)
  e_ms = (e_rgb + 0.5 * rng.standard_normal((6, 4))).astype(np.float32)
  np.testing.assert_allclose(matcher_loss(e_rgb, e_ms, tau), reference_matcher_loss(e_rgb, e_ms, tau),
                             rtol=1e-5)


def test_matcher_loss_rejects_unpaired_batches():
  with pytest.raises(ValueError, match="same shape"):
    matcher_loss(jnp.ones((5, 3)), jnp.ones((4, 3)))


def layer_norm(x, epsilon=1e-5):
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + epsilon)


def test_projection_head_is_residual_mlp_then_layer_norm():
  head = ProjectionHead(12, 8, rngs=nnx.Rngs(0))
  # Non-trivial LayerNorm affine parameters so that they are checked too.
  head.norm.scale[...] = jnp.linspace(0.5, 2.0, 8)
  head.norm.bias[...] = jnp.linspace(-1.0, 1.0, 8)
  head.eval()
  x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
  w1, b1 = np.asarray(head.projection.kernel[...]), np.asarray(head.projection.bias[...])
  w2, b2 = np.asarray(head.hidden.kernel[...]), np.asarray(head.hidden.bias[...])
  h = x @ w1 + b1
  gelu = 0.5 * h * (1 + erf(h / np.sqrt(2)))  # exact GELU, as torch.nn.GELU()
  expected = layer_norm(h + gelu @ w2 + b2) * np.linspace(0.5, 2.0, 8) + np.linspace(-1, 1, 8)
  np.testing.assert_allclose(head(x), expected, rtol=1e-4, atol=1e-5)


def test_projection_head_default_shapes_and_dropout():
  head = ProjectionHead(rngs=nnx.Rngs(0))
  assert head.projection.kernel[...].shape == (512, 256)
  assert head.hidden.kernel[...].shape == (256, 256)
  assert head.dropout.rate == 0.1
  num_params = sum(p.size for p in jax.tree.leaves(nnx.state(head, nnx.Param)))
  assert num_params == (512 * 256 + 256) + (256 * 256 + 256) + 2 * 256
  x = jnp.ones((4, 512))
  out = head(x)  # train mode: dropout active
  assert out.shape == (4, 256)
  head.eval()
  np.testing.assert_array_equal(head(x), head(x))
  assert not np.allclose(head(x), out)


class TinyEncoder(nnx.Module):
  """Stand-in for `models.create_model`: (B, H, W, C) -> (logits, features)."""

  def __init__(self, in_channels: int, *, rngs: nnx.Rngs):
    self.embed = nnx.Linear(in_channels, 512, rngs=rngs)
    self.classifier = nnx.Linear(512, 10, rngs=rngs)

  def __call__(self, x):
    tokens = self.embed(x.reshape(x.shape[0], -1, x.shape[-1]))
    pooled = tokens.mean(axis=1)
    return self.classifier(pooled), {"tokens": tokens, "pooled": pooled}


def test_matcher_embeds_each_modality_with_its_own_encoder_and_head():
  rngs = nnx.Rngs(0)
  matcher = Matcher(ms_encoder=TinyEncoder(10, rngs=rngs), rgb_encoder=TinyEncoder(3, rngs=rngs),
                    rngs=rngs)
  matcher.eval()
  ms, rgb = jnp.ones((2, 4, 4, 10)), jnp.ones((2, 4, 4, 3))
  e_ms, e_rgb = matcher(ms, rgb)
  assert e_ms.shape == e_rgb.shape == (2, 256)
  np.testing.assert_allclose(e_ms, matcher.ms_head(matcher.ms_encoder(ms)[1]["pooled"]))
  np.testing.assert_allclose(e_rgb, matcher.rgb_head(matcher.rgb_encoder(rgb)[1]["pooled"]))


def test_matcher_trains_under_jit():
  rngs = nnx.Rngs(0)
  matcher = Matcher(ms_encoder=TinyEncoder(10, rngs=rngs), rgb_encoder=TinyEncoder(3, rngs=rngs),
                    rngs=rngs)
  matcher.eval()  # deterministic, so that the loss decrease below is not dropout noise
  import optax
  optimizer = nnx.Optimizer(matcher, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(matcher, optimizer, ms, rgb):
    loss, grads = nnx.value_and_grad(lambda m: matcher_loss(*reversed(m(ms, rgb))))(matcher)
    optimizer.update(matcher, grads)
    return loss

  rng = np.random.default_rng(0)
  ms = jnp.asarray(rng.standard_normal((8, 4, 4, 10)), jnp.float32)
  rgb = ms[..., :3]
  losses = [float(step(matcher, optimizer, ms, rgb)) for _ in range(5)]
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_plateau_halves_the_learning_rate_after_patience_epochs():
  import ml_collections
  from sembridge_jax.train import optimizers
  from sembridge_jax.train.matcher import Plateau
  from sembridge_jax.train.state import TrainState
  tx = optimizers.make_optimizer(ml_collections.ConfigDict(
      {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-3, "schedule": "constant"}))
  params = nnx.State({"w": nnx.Param(jnp.zeros(3))})
  state = TrainState.create(params, nnx.State({}), tx)
  plateau = Plateau(patience=2, factor=0.5)
  rates = []
  for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.1, 2.2, 1.0, 1.5, 1.5, 1.5, 1.5], start=1):
    state = plateau(epoch, state, {"val_loss": loss})
    rates.append(optimizers.get_learning_rate(state.opt_state))
  # Improvements at epochs 1, 2 and 6; two bad epochs in a row halve the rate and restart
  # the count (epochs 4, 8 and 10).
  np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4,
                                     1.25e-4], rtol=1e-6)
  saved = plateau.get()
  resumed = Plateau(patience=2, factor=0.5)
  resumed.set(saved)
  assert resumed.get() == saved == {"best": 1.0, "bad_epochs": 0}
  assert plateau(11, state, {}) is state  # No validation metric: nothing changes.
