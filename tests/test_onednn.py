"""The oneDNN CPU convolution (sembridge_jax/models/onednn.py): built and registered here,
chosen by ``"auto"`` where it pays, safe across threads, and explained where it cannot run.

Its numbers against ``lax.conv`` (values and both gradients, every case of
tests/test_models.py's CONV_CASES) are checked in test_models.py with the other paths.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sembridge_jax.models import conv as conv_lib
from sembridge_jax.models import onednn


def test_the_library_builds_and_registers_on_this_machine():
  state = onednn.status()
  assert state.available, f"oneDNN convolutions unavailable: {state.reason}"
  assert state.reason.endswith(".so")


def resolve(input_shape, kernel_shape, groups=1, strides=1, padding=1, backend="cpu",
            dtype=jnp.float32):
  return conv_lib.resolve_conv_impl(
    "auto", input_shape=input_shape, kernel_shape=kernel_shape, strides=strides,
    padding=padding, feature_group_count=groups, backend=backend, dtype=dtype)


def test_auto_sends_4x4_and_larger_float32_outputs_to_onednn_on_one_cpu_device(monkeypatch):
  assert resolve((64, 16, 16, 64), (3, 3, 64, 64)) == "onednn"
  assert resolve((64, 4, 4, 256), (3, 3, 256, 256)) == "onednn"  # 16 output pixels
  assert resolve((64, 32, 32, 96), (3, 3, 1, 96), groups=96, strides=2) == "onednn"
  assert resolve((64, 8, 8, 32), (1, 1, 32, 192), padding=0) == "onednn"
  assert resolve((64, 64, 64, 3), (7, 7, 3, 64), strides=2, padding=3) == "onednn"
  # 2x2 outputs keep im2col (oneDNN is slower there); other dtypes and backends keep theirs.
  assert resolve((64, 2, 2, 512), (3, 3, 512, 512)) == "im2col"
  assert resolve((64, 8, 8, 256), (3, 3, 256, 512), strides=4) == "im2col"
  assert resolve((64, 16, 16, 64), (3, 3, 64, 64), dtype=jnp.bfloat16) == "xla_gemm_grad"
  assert resolve((64, 16, 16, 64), (3, 3, 64, 64), backend="gpu") == "xla"
  # Several devices: XLA's partitioner cannot split the custom call along the batch.
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  assert resolve((64, 16, 16, 64), (3, 3, 64, 64)) == "xla_gemm_grad"


def test_other_dtypes_are_computed_in_float32_and_returned_in_theirs():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.bfloat16)
  w = jnp.asarray(rng.normal(size=(3, 3, 4, 6)), jnp.bfloat16)
  grads = {}
  for impl in ("xla", "onednn"):
    y, vjp = jax.vjp(lambda x, w: conv_lib.conv2d(x, w, padding=1, impl=impl), x, w)
    grads[impl] = (y, *vjp(jnp.ones_like(y)))
  for reference, value in zip(grads["xla"], grads["onednn"]):
    assert value.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(value), np.float32(reference), rtol=2e-2,
                               atol=2e-2 * float(jnp.max(jnp.abs(np.float32(reference)))))


def test_one_primitive_runs_on_several_threads_at_once():
  """XLA runs one custom call per fake CPU device, concurrently: the cached primitives
  must not share scratch memory."""
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(3, 3, 16, 16)), jnp.float32)
  inputs = [jnp.asarray(rng.normal(size=(8, 16, 16, 16)), jnp.float32) for _ in range(8)]

  def gradients(impl):
    loss = lambda x, w: jnp.sum(conv_lib.conv2d(x, w, padding=1, impl=impl) ** 2)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  onednn_grads, xla_grads = gradients("onednn"), gradients("xla")
  onednn_grads(inputs[0], w)  # compile once, outside the threads
  with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    results = list(pool.map(lambda x: onednn_grads(x, w), inputs * 3))
  for x, (dx, dw) in zip(inputs * 3, results):
    dx_ref, dw_ref = xla_grads(x, w)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-3)


PROBE = """
import json
import jax.numpy as jnp
from sembridge_jax.models import conv, onednn
state = onednn.status()
try:
  conv.conv2d(jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2)), padding=1, impl="onednn")
  error = None
except RuntimeError as exc:
  error = str(exc)
auto = conv.resolve_conv_impl("auto", input_shape=(64, 16, 16, 64), kernel_shape=(3, 3, 64, 64),
                              padding=1, backend="cpu")
print(json.dumps({"available": state.available, "reason": state.reason, "error": error,
                  "auto": auto}))
"""


@pytest.mark.parametrize("setting, reason", [
  ({"SEMBRIDGE_JAX_ONEDNN": "0"}, "turned off by SEMBRIDGE_JAX_ONEDNN=0"),
  ({"CXX": "/bin/false"}, "compiling onednn_conv.cc failed"),
])
def test_without_onednn_auto_falls_back_and_the_explicit_choice_says_why(tmp_path, setting, reason):
  env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), **setting}  # an empty library cache
  output = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True).stdout
  result = json.loads(output.strip().splitlines()[-1])
  assert result["available"] is False
  assert result["reason"].startswith(reason)
  assert result["error"] == f"conv_impl='onednn' is unavailable: {result['reason']}"
  assert "\n" not in result["error"]
  assert result["auto"] == "xla_gemm_grad"
  assert not any(tmp_path.rglob("*.so"))


def test_bad_arguments_are_errors_not_crashes(monkeypatch):
  x, kernel = jnp.ones((1, 16, 16, 8)), jnp.ones((3, 3, 1, 8))  # a depthwise kernel, 1 group
  with pytest.raises(ValueError, match="does not fit"):
    onednn.conv2d_onednn(x, kernel, padding=((1, 1), (1, 1)))
  with pytest.raises(ValueError, match="negative padding"):
    onednn.conv2d_onednn(x, jnp.ones((3, 3, 8, 8)), padding=((-1, 0), (1, 1)))
  assert resolve((1, 16, 16, 8), (3, 3, 8, 8), padding=((-1, 0), (1, 1))) != "onednn"
  # Past the Python checks, the C++ handler checks the shapes itself: an error, no crash.
  with pytest.raises(Exception, match="inconsistent shapes"):
    onednn._call("sembridge_conv_fwd", (1, 16, 16, 8), x, kernel,
                 **onednn._attributes((1, 1), ((1, 1), (1, 1)), 1)).block_until_ready()
  monkeypatch.setattr(jax, "device_count", lambda: 2)
  with pytest.raises(RuntimeError, match="one CPU device"):
    onednn.conv2d_onednn(x, jnp.ones((3, 3, 8, 8)), padding=((1, 1), (1, 1)))


def test_vmap_maps_one_call_per_element():
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(size=(3, 2, 8, 8, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 4, 6)), jnp.float32)

  def grads(impl):
    loss = lambda x, w: jnp.sum(conv_lib.conv2d(x, w, padding=1, impl=impl) ** 2)
    return jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None))(xs, w)

  for value, reference in zip(grads("onednn"), grads("xla")):
    np.testing.assert_allclose(value, reference, rtol=1e-4, atol=1e-3)
