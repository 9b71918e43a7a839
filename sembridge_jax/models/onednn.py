"""2-D convolution on the CPU through oneDNN (the library PyTorch's CPU convolutions use).

XLA:CPU runs the dense convolutions of a ResNet at a third to a seventh of oneDNN's
speed (docs/performance.md), most of all their kernel gradients. This module runs the
convolution of ``conv.py``'s docstring, its input gradient and its kernel gradient as
three XLA FFI custom calls into oneDNN (``onednn_conv.cc``):

* forward ``y = conv(x, k)``;
* input gradient ``dx = conv_transpose(dy, k)`` (oneDNN's backward-data primitive);
* kernel gradient ``dk[i, j, c, o] = sum_{b, h, w} x_pad[b, sh h + i, sw w + j, c]
  dy[b, h, w, o]`` (its backward-weights primitive),

tied together by a ``jax.custom_vjp``. The numbers are those of ``lax.conv`` up to
float32 summation order (tested).

The library is built on first use, once per machine: g++ compiles ``onednn_conv.cc``
against jaxlib's FFI headers and the ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp``
wheels (dependencies on Linux x86-64) into ``~/.cache/sembridge_jax/onednn`` (about 4 s),
keyed by the source, the jaxlib version and the oneDNN library. Where any of that is
missing, :func:`status` says why and ``conv_impl="auto"`` keeps XLA's paths;
``SEMBRIDGE_JAX_ONEDNN=0`` turns it off.

oneDNN runs on OpenMP threads, one per core by default (``OMP_NUM_THREADS``). Processes
that share a machine's cores (several trainings side by side, ``pytest -n``) should split
them: ``OMP_NUM_THREADS=cores/processes``. Two regime-map processes on 2 cores with the
default trained about 6x slower than with ``OMP_NUM_THREADS=1`` each: OpenMP's parallel
regions wait for their slowest thread, and on oversubscribed cores that one is often
descheduled.

Limits: float32 compute (other dtypes are cast to float32 and back), CPU only, and no
forward-mode rule (``jax.jvp`` needs ``conv_impl="xla"``), ``vmap`` runs one call per
mapped element, and one device per process: XLA's partitioner cannot split a custom call
along the batch (it would run the whole batch on every device), so ``"auto"`` uses it
only where the process has one CPU device and an explicit ``"onednn"`` refuses more.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sembridge_jax.compilation_cache import user_cache_directory
from sembridge_jax.models.windows import Pads, pair

_LOG = logging.getLogger(__name__)
_SOURCE = "onednn_conv.cc"
_TARGETS = {  # FFI target name -> exported handler symbol in onednn_conv.cc
  "sembridge_conv_fwd": "SembridgeConvForward",
  "sembridge_conv_bwd_data": "SembridgeConvBackwardData",
  "sembridge_conv_bwd_weights": "SembridgeConvBackwardWeights",
}
DISABLE_ENV = "SEMBRIDGE_JAX_ONEDNN"
_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-w")
_STATUS_LOCK = threading.Lock()


class OneDnnStatus(NamedTuple):
  """Whether the oneDNN convolution can run here.

  Attributes:
    available: the handlers are compiled, loaded and registered with XLA.
    reason: why not (one line), or the path of the compiled library.
  """

  available: bool
  reason: str


def _onednn_paths() -> tuple[pathlib.Path, pathlib.Path]:
  """(include directory, libdnnl.so.3) of the installed oneDNN wheels."""
  try:
    library = next(f.locate() for f in importlib.metadata.files("onednn-cpu-gomp")
                   if f.name == "libdnnl.so.3")
    header = next(f.locate() for f in importlib.metadata.files("onednn-devel-cpu-gomp")
                  if str(f).endswith("oneapi/dnnl/dnnl.hpp"))
  except (importlib.metadata.PackageNotFoundError, StopIteration, TypeError) as error:
    raise RuntimeError("the onednn-cpu-gomp and onednn-devel-cpu-gomp wheels are not "
                       f"installed ({error.__class__.__name__})") from None
  return pathlib.Path(header).resolve().parents[2], pathlib.Path(library).resolve()


def _build(rebuild: bool = False) -> pathlib.Path:
  """Compiles ``onednn_conv.cc`` into the user cache (once, or again with ``rebuild``) and
  returns the library."""
  include, library = _onednn_paths()
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if not compiler:
    raise RuntimeError("no C++ compiler (g++) on PATH")
  source = importlib.resources.files("sembridge_jax.models").joinpath(_SOURCE).read_bytes()
  key = hashlib.sha256(b"\0".join(part.encode() if isinstance(part, str) else part for part in [
    source, importlib.metadata.version("jaxlib"), importlib.metadata.version("onednn-cpu-gomp"),
    importlib.metadata.version("onednn-devel-cpu-gomp"), str(library),
    str(library.stat().st_size), compiler, " ".join(_FLAGS),
  ])).hexdigest()[:16]
  directory = user_cache_directory("onednn")
  target = directory / f"onednn_conv_{key}.so"
  if target.exists() and not rebuild:
    return target
  directory.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory) as scratch:
    source_path = pathlib.Path(scratch) / _SOURCE
    source_path.write_bytes(source)
    built = pathlib.Path(scratch) / target.name
    command = [compiler, *_FLAGS, str(source_path),
               f"-I{jax.ffi.include_dir()}", f"-I{include}", f"-L{library.parent}",
               f"-l:{library.name}", f"-Wl,-rpath,{library.parent}", "-o", str(built)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
      lines = result.stderr.strip().splitlines() or ["(no output)"]
      first_error = next((line for line in lines if "error" in line), lines[-1])
      raise RuntimeError(f"compiling {_SOURCE} failed: {first_error}")
    os.replace(built, target)  # atomic: concurrent builders (pytest -n) each finish whole
  return target


@functools.cache
def status() -> OneDnnStatus:
  """Builds, loads and registers the oneDNN handlers on first call; says whether that
  worked (and, if not, why)."""
  if os.environ.get(DISABLE_ENV, "1").strip() in ("0", "false", "off"):
    return OneDnnStatus(False, f"turned off by {DISABLE_ENV}=0")
  with _STATUS_LOCK:  # one build and registration even if two threads trace at once
    try:
      path = _build()
      try:
        library = ctypes.cdll.LoadLibrary(str(path))
      except OSError:  # a damaged or stale cached build: compile once more
        path = _build(rebuild=True)
        library = ctypes.cdll.LoadLibrary(str(path))
      for name, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    except Exception as error:  # noqa: BLE001 -- whatever fails, "auto" must fall back
      reason = " ".join(str(error).split()) or error.__class__.__name__
      _LOG.info("oneDNN convolutions unavailable, XLA's are used: %s", reason)
      return OneDnnStatus(False, reason)
  return OneDnnStatus(True, str(path))


def available() -> bool:
  """True where :func:`conv2d_onednn` can run (see :func:`status`)."""
  return status().available


def _attributes(strides: tuple[int, int], padding: Pads, groups: int) -> dict:
  (top, bottom), (left, right) = padding
  values = dict(groups=groups, stride_h=strides[0], stride_w=strides[1], pad_top=top,
                pad_bottom=bottom, pad_left=left, pad_right=right)
  return {name: np.int64(value) for name, value in values.items()}


def _call(target: str, shape: tuple[int, ...], *operands: jax.Array, **attributes):
  # Under vmap: one call per mapped element (correct; a batched model is better served by
  # folding the mapped axis into the batch before the convolution).
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method="sequential")(*operands, **attributes)


def _output_shape(x_shape, kernel_shape, strides, padding) -> tuple[int, int, int, int]:
  (kh, kw, _, out), ((top, bottom), (left, right)) = kernel_shape, padding
  return (x_shape[0], (x_shape[1] + top + bottom - kh) // strides[0] + 1,
          (x_shape[2] + left + right - kw) // strides[1] + 1, out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Pads,
          groups: int) -> jax.Array:
  return _call("sembridge_conv_fwd", _output_shape(x.shape, kernel.shape, strides, padding),
               x, kernel, **_attributes(strides, padding, groups))


def _conv_fwd(x, kernel, strides, padding, groups):
  return _conv(x, kernel, strides, padding, groups), (x, kernel)


def _conv_bwd(strides, padding, groups, residuals, dy):
  x, kernel = residuals
  attributes = _attributes(strides, padding, groups)
  dx = _call("sembridge_conv_bwd_data", x.shape, dy, kernel, **attributes)
  dkernel = _call("sembridge_conv_bwd_weights", kernel.shape, x, dy, **attributes)
  return dx, dkernel


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d_onednn(
  x: jax.Array,
  kernel: jax.Array,
  *,
  strides: tuple[int, int] | int = (1, 1),
  padding: Pads,
  feature_group_count: int = 1,
) -> jax.Array:
  """The convolution of ``conv.py``'s docstring (NHWC ``x``, HWIO ``kernel``, explicit
  ``((top, bottom), (left, right))`` padding) through oneDNN, differentiable once.

  Raises:
    RuntimeError: oneDNN is not available here (the message says why), or the process
      has more than one device or no CPU backend.
    ValueError: the shapes do not fit, or a padding is negative.
  """
  state = status()
  if not state.available:
    raise RuntimeError(f"conv_impl='onednn' is unavailable: {state.reason}")
  if jax.default_backend() != "cpu" or jax.device_count() != 1:
    raise RuntimeError("conv_impl='onednn' runs on one CPU device (XLA would repeat it on "
                       f"every one of {jax.device_count()} {jax.default_backend()} devices); "
                       "use 'auto' or 'xla'.")
  if (x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] * feature_group_count != x.shape[3]
      or kernel.shape[3] % feature_group_count):
    raise ValueError(f"conv_impl='onednn': kernel {kernel.shape} does not fit NHWC input "
                     f"{x.shape} in {feature_group_count} groups.")
  if min(pad for side in padding for pad in side) < 0:
    raise ValueError(f"conv_impl='onednn' takes no negative padding, got {padding}.")
  dtype = jnp.result_type(x, kernel)
  y = _conv(x.astype(jnp.float32), kernel.astype(jnp.float32), pair(strides, "strides"),
            tuple(tuple(side) for side in padding), int(feature_group_count))
  return y.astype(dtype)
