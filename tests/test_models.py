"""Tests of sembridge_jax.models: shapes, parameter counts, modes, dtypes, conv paths.

Run: python -m pytest tests/test_models.py -q -n 0
Shapes and parameter counts are checked abstractly (``jax.eval_shape``): no
compilation, so every architecture x input size x channel count stays cheap.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sembridge_jax import models
from sembridge_jax.models import conv as conv_lib
from sembridge_jax.models import initializers
from sembridge_jax.models import pooling
from sembridge_jax.models.normalization import BatchNorm

# The authors' trainable parameter counts for 10 classes (METHOD.md section 4).
AUTHORS_COUNTS = {
  "resnet34": {3: 21_289_802, 10: 21_311_754},
  "mobilenet_v2": {3: 1_981_706, 10: 1_983_722},
  "shufflenet_v2_x0_5": {3: 871_722, 10: 873_234},
}
# First conv of each architecture: (kernel size, output channels). Every extra
# input channel adds kernel_size**2 * output_channels weights (no bias).
FIRST_CONV = {"resnet34": (7, 64), "mobilenet_v2": (3, 32), "shufflenet_v2_x0_5": (3, 24)}
TOKEN_DIMS = {"resnet34": 512, "mobilenet_v2": 512, "shufflenet_v2_x0_5": 1024}


def abstract_model(name: str, in_channels: int, num_classes: int = 10) -> nnx.Module:
  """The model with ShapeDtypeStruct leaves: built without computing anything."""
  return nnx.eval_shape(
    lambda: models.create_model(
      name, num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(0)
    )
  )


def expected_count(name: str, in_channels: int) -> int:
  kernel, width = FIRST_CONV[name]
  return AUTHORS_COUNTS[name][3] + kernel * kernel * width * (in_channels - 3)


# ---------------------------------------------------------------- registry


def test_registry_lists_the_three_architectures():
  assert set(models.MODEL_NAMES) == {"resnet34", "mobilenet_v2", "shufflenet_v2_x0_5"}
  assert set(models.MODEL_REGISTRY) == set(models.MODEL_NAMES)


def test_unknown_name_raises_listing_known_names():
  with pytest.raises(ValueError) as error:
    models.create_model("vgg16", num_classes=10, in_channels=3, rngs=nnx.Rngs(0))
  for name in models.MODEL_NAMES:
    assert name in str(error.value)
  assert "vgg16" in str(error.value)


@pytest.mark.parametrize(
  "kwargs, argument",
  [
    (dict(conv_impl="cudnn"), "conv_impl"),
    (dict(num_classes=0), "num_classes"),
    (dict(in_channels=-1), "in_channels"),
  ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs, argument):
  arguments = dict(num_classes=10, in_channels=3, rngs=nnx.Rngs(0)) | kwargs
  with pytest.raises(ValueError, match=argument):
    models.create_model("resnet34", **arguments)


# ---------------------------------------------------------------- parameter counts


def test_first_conv_arithmetic_reproduces_the_authors_10_channel_counts():
  for name, counts in AUTHORS_COUNTS.items():
    assert expected_count(name, 10) == counts[10], name


@pytest.mark.parametrize("name", sorted(AUTHORS_COUNTS))
def test_parameter_counts_match_the_authors(name):
  for in_channels in (3, 10, 14):
    model = abstract_model(name, in_channels)
    assert models.count_params(model) == expected_count(name, in_channels), in_channels
  # The classifier is Linear(512, K): 513 parameters per extra class.
  assert (
    models.count_params(abstract_model(name, 3, num_classes=15))
    == AUTHORS_COUNTS[name][3] + 5 * 513
  )


def test_14_channel_counts_are_explicit():
  # 10-channel count + 4 * k^2 * width, worked out by hand.
  assert expected_count("resnet34", 14) == 21_311_754 + 4 * 49 * 64 == 21_324_298
  assert expected_count("mobilenet_v2", 14) == 1_983_722 + 4 * 9 * 32 == 1_984_874
  assert expected_count("shufflenet_v2_x0_5", 14) == 873_234 + 4 * 9 * 24 == 874_098


def test_count_params_excludes_batch_statistics():
  model = abstract_model("shufflenet_v2_x0_5", 3)
  all_leaves = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model)))
  stats = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
  assert stats > 0
  assert models.count_params(model) == all_leaves - stats - _rng_leaf_size(model)


def _rng_leaf_size(model: nnx.Module) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.RngState)))


# ---------------------------------------------------------------- output shapes


@pytest.mark.parametrize("name", sorted(AUTHORS_COUNTS))
def test_output_shapes_and_dtypes(name):
  batch, num_classes = 2, 7
  for in_channels in (3, 10):
    model = abstract_model(name, in_channels, num_classes)
    assert model.token_dim == TOKEN_DIMS[name]
    assert model.embed_dim == 512
    graphdef, state = nnx.split(model)
    for size in (32, 64, 128):
      images = jax.ShapeDtypeStruct((batch, size, size, in_channels), jnp.float32)
      logits, features = jax.eval_shape(
        lambda state, x: nnx.merge(graphdef, state)(x), state, images
      )
      tokens_per_side = size // 32  # Every architecture downsamples by 32.
      assert logits.shape == (batch, num_classes)
      assert features["tokens"].shape == (batch, tokens_per_side**2, TOKEN_DIMS[name])
      assert features["pooled"].shape == (batch, 512)
      for array in (logits, features["tokens"], features["pooled"]):
        assert array.dtype == jnp.float32


# ---------------------------------------------------------------- real forward passes


@nnx.jit
def _forward(model, images):
  return model(images)


@pytest.fixture(scope="module")
def shufflenet():
  """A float32 ShuffleNet in eval mode; tests that change it work on a clone."""
  model = models.create_model("shufflenet_v2_x0_5", num_classes=5, in_channels=3, rngs=nnx.Rngs(0))
  model.eval()
  return model


@pytest.fixture(scope="module")
def images_32():
  return jnp.asarray(np.random.default_rng(7).normal(size=(4, 32, 32, 3)), jnp.float32)


def test_train_mode_uses_dropout_and_batch_stats_eval_mode_is_deterministic(images_32):
  model = models.create_model(
    "mobilenet_v2", num_classes=5, in_channels=3, rngs=nnx.Rngs(params=0, dropout=1)
  )
  model.train()
  running_mean = model.last_conv.bn.mean[...].copy()
  logits_a, features_a = _forward(model, images_32)
  logits_b, features_b = _forward(model, images_32)
  # Dropout sits after pooling: same pooled features, different logits.
  np.testing.assert_allclose(features_a["pooled"], features_b["pooled"], rtol=1e-6)
  assert not np.allclose(logits_a, logits_b)
  assert not np.allclose(model.last_conv.bn.mean[...], running_mean)

  model.eval()
  running_mean = model.last_conv.bn.mean[...].copy()
  logits_c, features_c = _forward(model, images_32)
  logits_d, _ = _forward(model, images_32)
  np.testing.assert_array_equal(logits_c, logits_d)
  np.testing.assert_array_equal(model.last_conv.bn.mean[...], running_mean)
  # Running statistics (two updates from their init) differ from batch statistics.
  assert not np.allclose(features_c["pooled"], features_a["pooled"], atol=1e-3)


def test_bfloat16_compute_returns_float32_close_to_float32(shufflenet, images_32):
  # Eval mode: with batch statistics a freshly initialised BN network amplifies
  # any perturbation by ~1.2x per block (it is chaotic at init), so bf16
  # rounding would grow to O(1) by the last block without anything being wrong.
  model = models.create_model(
    "shufflenet_v2_x0_5", num_classes=5, in_channels=3, rngs=nnx.Rngs(0), dtype=jnp.bfloat16
  )
  model.eval()
  assert model.stem.conv.kernel[...].dtype == jnp.float32  # Parameters stay float32.
  np.testing.assert_array_equal(model.stem.conv.kernel[...], shufflenet.stem.conv.kernel[...])
  logits32, features32 = _forward(shufflenet, images_32)
  logits16, features16 = _forward(model, images_32)
  for reference, low in (
    (logits32, logits16),
    (features32["pooled"], features16["pooled"]),
    (features32["tokens"], features16["tokens"]),
  ):
    assert low.dtype == jnp.float32
    relative_error = jnp.linalg.norm(low - reference) / jnp.linalg.norm(reference)
    assert 0.0 < float(relative_error) < 0.05  # bf16 rounding, ~1% measured.


def test_whole_model_gradients_agree_between_conv_impls(shufflenet, images_32):
  """Same parameters, XLA vs im2col/taps and oneDNN kernels: same outputs, same gradients.

  Eval mode: BatchNorm is then affine, so float32 rounding differences between
  the two kernels are not amplified (see the bfloat16 test); the per-layer
  tests below check train-mode-relevant gradients kernel by kernel.
  """
  model = nnx.clone(shufflenet)
  labels = jnp.arange(4) % 5

  def loss_and_grads(impl):
    model.set_attributes(conv_impl=impl)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def loss_fn(params):
      logits, features = nnx.merge(graphdef, params, rest)(images_32)
      log_probs = jax.nn.log_softmax(logits)
      cross_entropy = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
      return cross_entropy + jnp.mean(features["tokens"] ** 2)

    return jax.value_and_grad(loss_fn)(params)

  loss_xla, grads_xla = loss_and_grads("xla")
  for impl in ("im2col", "onednn"):
    loss_other, grads_other = loss_and_grads(impl)
    np.testing.assert_allclose(loss_other, loss_xla, rtol=1e-5)
    paths_and_leaves = jax.tree_util.tree_leaves_with_path(grads_xla)
    assert len(paths_and_leaves) == len(jax.tree.leaves(grads_other)) > 0
    for (path, g_xla), g_other in zip(paths_and_leaves, jax.tree.leaves(grads_other)):
      np.testing.assert_allclose(
        g_other, g_xla, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(g_xla))),
        err_msg=f"{impl} {jax.tree_util.keystr(path)}",
      )


# ---------------------------------------------------------------- convolution paths

CONV_CASES = [
  # (batch, height, width, in, out, kernel, strides, padding, groups)
  (2, 8, 8, 5, 7, 3, 1, 1, 1),  # dense 3x3, same size
  (2, 8, 8, 5, 7, 3, 2, 1, 1),  # dense stride 2, even map
  (2, 7, 9, 4, 6, 3, 2, 1, 1),  # stride 2, odd/non-square map
  (3, 2, 2, 16, 8, 3, 1, 1, 1),  # tiny 2x2 map (the slow XLA:CPU case)
  (2, 1, 1, 8, 8, 3, 1, 1, 1),  # 1x1 map, only the centre tap sees data
  (2, 11, 10, 3, 8, 7, 2, 3, 1),  # ResNet stem
  (2, 6, 6, 6, 10, 1, 1, 0, 1),  # pointwise
  (2, 8, 8, 6, 10, 1, 2, 0, 1),  # strided 1x1 shortcut
  (2, 9, 9, 6, 6, 3, 1, 1, 6),  # depthwise
  (2, 9, 8, 6, 6, 3, 2, 1, 6),  # depthwise stride 2
  (2, 4, 4, 4, 8, 3, 2, 1, 4),  # depthwise, channel multiplier 2
  (2, 6, 6, 8, 6, 3, 1, 1, 2),  # grouped, 4 channels per group
  (2, 8, 8, 4, 4, 3, 1, ((0, 2), (1, 0)), 1),  # asymmetric padding
  (2, 8, 7, 4, 4, 3, 2, ((2, 0), (0, 1)), 4),  # asymmetric padding, depthwise
]


GEMM_GRAD_CASES = [case for case in CONV_CASES if case[6] == 1 and case[8] == 1] + [
  (2, 5, 4, 3, 5, 5, 1, 2, 1),  # 5x5 kernel, map smaller than the kernel's reach
  (2, 6, 7, 3, 4, (2, 3), 1, ((1, 0), (2, 1)), 1),  # 2x3 kernel, asymmetric padding
  (2, 8, 8, 5, 7, 3, 2, 1, 1),  # strided: falls back to plain XLA
  (2, 6, 6, 8, 6, 3, 1, 1, 2),  # grouped: falls back to plain XLA
]


def _implementation(name):
  if name == "onednn":
    return functools.partial(conv_lib.conv2d, impl="onednn")
  return {"im2col": conv_lib.conv2d_im2col, "xla_gemm_grad": conv_lib.conv2d_xla_gemm_grad}[name]


@pytest.mark.parametrize(
  "impl, case",
  [("im2col", case) for case in CONV_CASES] + [("xla_gemm_grad", case) for case in GEMM_GRAD_CASES]
  + [("onednn", case) for case in CONV_CASES + GEMM_GRAD_CASES[-4:-2]],
  ids=lambda value: value if isinstance(value, str) else "-".join(map(str, value[1:])))
def test_conv_paths_equal_lax_convolution_forward_and_gradients(impl, case):
  batch, height, width, cin, cout, kernel, strides, padding, groups = case
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  # NumPy data: every new shape of jax.random.normal is a (slow) compile.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, height, width, cin)).astype(np.float32)
  w = rng.normal(size=(kh, kw, cin // groups, cout)).astype(np.float32)

  def run(impl):
    def conv(x, w):
      return impl(x, w, strides=(strides, strides), padding=padding, feature_group_count=groups)

    y, vjp = jax.vjp(jax.jit(conv), x, w)
    cotangent = np.random.default_rng(1).normal(size=y.shape).astype(np.float32)
    return y, vjp(cotangent)

  (y_ref, (dx_ref, dw_ref)) = run(conv_lib.conv2d_xla)
  (y, (dx, dw)) = run(_implementation(impl))
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5)


def test_gemm_kernel_gradient_keeps_bfloat16_and_matches_xla():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.bfloat16)
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.bfloat16)
  grads = {}
  for name, impl in (("xla", conv_lib.conv2d_xla), ("gemm", conv_lib.conv2d_xla_gemm_grad)):
    y, vjp = jax.vjp(lambda x, w: impl(x, w, padding=1), x, w)
    grads[name] = vjp(jnp.ones_like(y))
  for (dx_ref, dw_ref), (dx, dw) in [(grads["xla"], grads["gemm"])]:
    assert dx.dtype == dw.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(dx), np.float32(dx_ref), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(np.float32(dw), np.float32(dw_ref), rtol=2e-2,
                               atol=2e-2 * float(jnp.max(jnp.abs(np.float32(dw_ref)))))


def test_im2col_matches_numpy_direct_convolution():
  """An independent check of the convention (cross-correlation, symmetric padding)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
  w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = np.zeros((1, 3, 3, 4), np.float32)
  for h in range(3):
    for v in range(3):
      window = padded[0, 2 * h : 2 * h + 3, 2 * v : 2 * v + 3, :]
      expected[0, h, v] = np.einsum("ijc,ijco->o", window, w)
  y = conv_lib.conv2d_im2col(jnp.asarray(x), jnp.asarray(w), strides=(2, 2), padding=1)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_conv_module_keeps_nnx_conv_kernel_layout():
  layer = nnx.eval_shape(
    lambda: conv_lib.Conv(
      6, 12, 3, groups=3, kernel_init=initializers.kaiming_normal_fan_out, rngs=nnx.Rngs(0)
    )
  )
  reference = nnx.eval_shape(
    lambda: nnx.Conv(6, 12, (3, 3), feature_group_count=3, rngs=nnx.Rngs(0))
  )
  assert layer.kernel.shape == reference.kernel.shape == (3, 3, 2, 12)


def test_auto_picks_im2col_only_on_cpu_for_depthwise_pointwise_and_small_maps(monkeypatch):
  monkeypatch.setattr(conv_lib.onednn, "available", lambda: False)  # the rules beneath oneDNN

  def resolve(input_shape, kernel_shape, groups=1, strides=1, padding=1, backend="cpu"):
    return conv_lib.resolve_conv_impl(
      "auto", input_shape=input_shape, kernel_shape=kernel_shape, strides=strides,
      padding=padding, feature_group_count=groups, backend=backend,
    )

  assert resolve((64, 32, 32, 96), (3, 3, 1, 96), groups=96) == "im2col"
  assert resolve((64, 32, 32, 16), (1, 1, 16, 96), padding=0) == "im2col"
  assert resolve((64, 4, 4, 256), (3, 3, 256, 256)) == "im2col"
  assert resolve((64, 8, 8, 256), (3, 3, 256, 512), strides=2) == "im2col"  # 4x4 output
  # Dense stride 1 on 16x16 and larger maps: XLA, with the kernel gradient as one GEMM.
  assert resolve((64, 16, 16, 64), (3, 3, 64, 64)) == "xla_gemm_grad"
  assert resolve((64, 8, 8, 128), (3, 3, 128, 128)) == "xla"
  assert resolve((64, 32, 32, 64), (3, 3, 64, 64), strides=2) == "xla"   # 16x16 output
  assert resolve((64, 16, 16, 64), (3, 3, 64, 64), backend="gpu") == "xla"
  assert resolve((64, 16, 16, 64), (1, 3, 64, 64), padding=((0, 0), (1, 1))) == "xla"
  assert resolve((64, 2, 2, 512), (3, 3, 512, 512), backend="gpu") == "xla"
  assert resolve((64, 32, 32, 96), (3, 3, 1, 96), groups=96, backend="tpu") == "xla"
  for impl in ("xla", "im2col", "xla_gemm_grad", "onednn"):
    resolved = conv_lib.resolve_conv_impl(
      impl, input_shape=(1, 64, 64, 3), kernel_shape=(3, 3, 3, 8)
    )
    assert resolved == impl
  with pytest.raises(ValueError, match="conv_impl"):
    conv_lib.resolve_conv_impl("fast", input_shape=(1, 4, 4, 3), kernel_shape=(3, 3, 3, 8))


# ---------------------------------------------------------------- max-pooling


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 5, 2), (1, 2, 2, 4), (1, 1, 1, 2)])
def test_max_pool_taps_equal_reduce_window_including_ties(shape):
  # Small integers make ties frequent; the gradient must go to the same input.
  rng = np.random.default_rng(0)
  x = np.round(2 * rng.normal(size=shape)).astype(np.float32)
  pooled_shape = (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2, shape[3])
  cotangent = rng.normal(size=pooled_shape).astype(np.float32)

  def run(impl):
    pool = jax.jit(lambda x: pooling.max_pool(x, 3, strides=2, padding=1, impl=impl))
    y, vjp = jax.vjp(pool, x)
    return y, vjp(cotangent)[0]

  y_ref, dx_ref = run("xla")
  y, dx = run("im2col")
  np.testing.assert_array_equal(y, y_ref)
  # Same routing (which inputs receive gradient); values up to summation order
  # where overlapping windows send gradient to the same input.
  np.testing.assert_array_equal(dx != 0, dx_ref != 0)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6)


def test_max_pool_matches_numpy_with_first_maximum_gradient():
  x = np.array([[1.0, 3.0, 3.0], [0.0, 3.0, 2.0], [1.0, 1.0, 1.0]], np.float32)[None, :, :, None]
  y, vjp = jax.vjp(
    lambda x: pooling.max_pool(x, 3, strides=2, padding=1, impl="im2col"), jnp.asarray(x)
  )
  np.testing.assert_array_equal(y[0, :, :, 0], [[3.0, 3.0], [3.0, 3.0]])
  (dx,) = vjp(jnp.ones_like(y))
  # Windows (0, 0) and (0, 1) cover rows 0-1: their first 3 is x[0, 1]. Windows
  # (1, 0) and (1, 1) cover rows 1-2: their first 3 is x[1, 1].
  expected = np.zeros((3, 3), np.float32)
  expected[0, 1] = 2.0  # windows (0, 0) and (0, 1)
  expected[1, 1] = 2.0  # windows (1, 0) and (1, 1)
  np.testing.assert_array_equal(dx[0, :, :, 0], expected)


# ---------------------------------------------------------------- batch norm and init


def test_batch_norm_matches_pytorch_semantics():
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, size=(4, 3, 3, 5)).astype(np.float32)
  layer = BatchNorm(5)
  layer.scale[...] = jnp.arange(1.0, 6.0)
  layer.bias[...] = jnp.full((5,), 0.5)
  y = layer(jnp.asarray(x))
  mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  np.testing.assert_allclose(
    y, (x - mean) / np.sqrt(var + 1e-5) * np.arange(1.0, 6.0) + 0.5, rtol=1e-4, atol=1e-4
  )
  n = 4 * 3 * 3
  np.testing.assert_allclose(layer.mean[...], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(layer.var[...], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)

  layer.eval()
  y_eval = layer(jnp.asarray(x))
  running_mean, running_var = np.asarray(layer.mean[...]), np.asarray(layer.var[...])
  np.testing.assert_allclose(
    y_eval,
    (x - running_mean) / np.sqrt(running_var + 1e-5) * np.arange(1.0, 6.0) + 0.5,
    rtol=1e-4, atol=1e-4,
  )
  np.testing.assert_array_equal(layer.mean[...], running_mean)


def test_initializers_follow_torch_distributions():
  key = jax.random.key(0)  # One key; each initializer compiles once anyway.
  kernel = initializers.kaiming_normal_fan_out(key, (3, 3, 64, 128))
  np.testing.assert_allclose(jnp.std(kernel), np.sqrt(2.0 / (9 * 128)), rtol=0.03)
  dense = initializers.torch_default_kernel(key, (256, 64))
  bound = 1.0 / np.sqrt(256)
  assert float(jnp.max(jnp.abs(dense))) <= bound
  np.testing.assert_allclose(jnp.std(dense), bound / np.sqrt(3.0), rtol=0.03)
  bias = initializers.torch_default_bias(256)(key, (64,))
  assert float(jnp.max(jnp.abs(bias))) <= bound
