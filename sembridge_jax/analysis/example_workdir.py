"""A workdir to explore: an existing pipeline run, or a small synthetic one made on the spot.

The notebook ``notebooks/transport_plans.ipynb`` reads a finished pipeline workdir. With
none given it runs ``sembridge-jax pipeline`` on a config file (``configs/tiny.py`` with
enough epochs that the BatchNorm statistics and features settle) into a temporary
directory. `execute_notebook` runs the notebook headless with some parameters replaced
(the tests and ``bench/make_figures.py`` use it).
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any, Mapping

import ml_collections

__all__ = ["apply_overrides", "execute_notebook", "load_config_file", "prepare_workdir"]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
                    ) -> ml_collections.ConfigDict:
  """Sets ``config.<dotted key> = value`` for each override (like ``--config.key=value``)."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node:
        raise ValueError(f"config override {key!r}: config has no section {part!r}")
      node = node[part]
    if leaf not in node:
      raise ValueError(f"config override {key!r}: config has no key {leaf!r}")
    node[leaf] = value
  return config


def load_config_file(path: str | pathlib.Path, overrides: Mapping[str, Any] | None = None
                     ) -> ml_collections.ConfigDict:
  """``get_config()`` of a ``configs/*.py`` file, with overrides applied and validated."""
  from sembridge_jax import config_base

  config = apply_overrides(config_base.config_from_file(path), overrides or {})
  return config_base.validate_config(config)


def prepare_workdir(workdir: str | pathlib.Path | None, *, config_file: str | pathlib.Path,
                    overrides: Mapping[str, Any] | None = None,
                    data_dir: str | None = None) -> pathlib.Path:
  """``workdir`` if given; else the pipeline of ``config_file`` run into a temporary dir.

  Args:
    workdir: a finished pipeline workdir, or None.
    config_file: the config of the run made when ``workdir`` is None.
    overrides: ``{"dotted.key": value}`` applied to that config.
    data_dir: a TFDS data_dir that may already hold the built dataset.

  Returns:
    The workdir path.
  """
  from sembridge_jax import stages

  if workdir is not None:
    path = pathlib.Path(workdir)
    if not (path / "results.json").exists():
      raise FileNotFoundError(f"{path} holds no results.json: run `sembridge-jax pipeline "
                              f"--workdir {path}` first, or pass workdir=None")
    return path
  config = load_config_file(config_file, overrides)
  if data_dir:
    config.data.data_dir = str(data_dir)
  path = pathlib.Path(tempfile.mkdtemp(prefix="sembridge_transport_"))
  stages.run_stage("pipeline", config, path)
  return path


def execute_notebook(path: str | pathlib.Path, parameters: Mapping[str, Any] | None = None, *,
                     timeout: int = 900, kernel_name: str = "python3"):
  """Runs a notebook top to bottom in a fresh kernel; returns the executed notebook.

  ``parameters`` (name -> Python literal) are appended to the cell tagged
  ``parameters``, so they override its defaults. The kernel's working directory is the
  notebook's folder. Raises ``nbclient.exceptions.CellExecutionError`` on any error.
  """
  import nbclient
  import nbformat

  path = pathlib.Path(path).absolute()
  notebook = nbformat.read(path, as_version=4)
  cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
  if len(cells) != 1:
    raise ValueError(f"{path} must have exactly one cell tagged 'parameters'; found {len(cells)}")
  if parameters:
    cells[0].source += "\n# Injected:\n" + "\n".join(
        f"{name} = {value!r}" for name, value in parameters.items())
  client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name,
                                   resources={"metadata": {"path": str(path.parent)}})
  client.execute()
  return notebook
