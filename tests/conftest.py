"""Shared fixtures: a tiny synthetic benchmark built once per test session."""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import subprocess
import sys
import tempfile
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Most of the suite's time is XLA compiling the same small programs again in every test
# and subprocess (the tiny pipeline, the notebook, the CLI, two hosts). A persistent
# compilation cache shared by the xdist workers and the subprocesses they start (the
# variable is inherited) compiles each once per machine. Set before JAX is imported.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(tempfile.gettempdir()) / f"sembridge-jax-tests-xla-{os.getuid()}"))


def shipped_config(name: str):
  """``configs/<name>.py``'s ``get_config()``."""
  sys.path.insert(0, str(REPO))
  return __import__(f"configs.{name}", fromlist=["get_config"]).get_config()


def tiny_config():
  return shipped_config("tiny")


@pytest.fixture(scope="session")
def tiny_benchmark_dir(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("tiny_tfds")


@pytest.fixture(scope="session")
def tiny_setup(tiny_benchmark_dir):
  """(config, benchmark) of configs/tiny.py, built into a session-wide data_dir."""
  from sembridge_jax import config_base, data
  config = config_base.validate_config(tiny_config())
  config.data.data_dir = str(tiny_benchmark_dir)
  benchmark = data.load_benchmark(config.data, data_dir=config.data.data_dir)
  return config, benchmark


def run_python(code: str, *, devices: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
  """Runs ``code`` in a fresh interpreter with ``devices`` fake CPU devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))
  if result.returncode != 0:
    raise AssertionError(f"subprocess failed:\n{result.stdout}\n{result.stderr}")
  return result


@pytest.fixture()
def http_server(tmp_path):
  """(folder, base URL): files put in the folder are served on 127.0.0.1."""
  served = tmp_path / "served"
  served.mkdir()
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield served, f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()
