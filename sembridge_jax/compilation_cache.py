"""The persistent XLA compilation cache, on by default.

A run compiles its train, evaluation and matching steps once per shape; the next run of
the same shapes (a resume, another seed, the next stage of the pipeline) loads them from
disk instead. On a GPU or TPU, where a synthetic run's steps take seconds, compilation is
most of a short run's wall time.

``config.compilation_cache_dir``:

* ``"auto"`` (default): a directory already chosen (``$JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) if any, else ``$XDG_CACHE_HOME/sembridge_jax/xla``
  (``~/.cache/sembridge_jax/xla``);
* a path: that directory;
* ``""``: no persistent cache.

JAX fixes the directory at the first compilation of a process, so this is set before any
(`sembridge_jax.stages.run_stage` calls it first).

Only programs that took at least ``jax_persistent_cache_min_compile_time_secs`` (JAX's
default, 1 s) to compile are written, so the cache holds the few expensive programs.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import jax

AUTO = "auto"


def default_directory() -> pathlib.Path:
  """The directory already chosen (``$JAX_COMPILATION_CACHE_DIR``, ``jax.config``), else
  the user cache's ``sembridge_jax/xla``."""
  explicit = (jax.config.jax_compilation_cache_dir
              or os.environ.get("JAX_COMPILATION_CACHE_DIR", "")).strip()
  if explicit:
    return pathlib.Path(explicit).expanduser()
  return user_cache_directory("xla")


def user_cache_directory(name: str) -> pathlib.Path:
  """``$XDG_CACHE_HOME/sembridge_jax/NAME`` (``~/.cache/sembridge_jax/NAME``): where the
  package keeps what it builds once per machine (compiled XLA programs, the oneDNN
  convolution library)."""
  base = os.environ.get("XDG_CACHE_HOME", "").strip() or pathlib.Path.home() / ".cache"
  return pathlib.Path(base).expanduser() / "sembridge_jax" / name


def enable(setting: str) -> pathlib.Path | None:
  """Points JAX's persistent compilation cache at ``setting`` (see the module
  docstring); returns the directory, or None when the cache is off."""
  if not setting:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  directory = default_directory() if setting == AUTO else pathlib.Path(setting).expanduser()
  try:
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK):
      raise PermissionError("not writable")
  except OSError as error:
    # A read-only home must not stop a run: it only recompiles.
    warnings.warn(f"no persistent compilation cache: cannot use {directory} ({error})",
                  stacklevel=2)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  return directory
