"""The run-time breakdown (train/timing.py) and the persistent compilation cache."""

from __future__ import annotations

import time

import jax
import pytest

from sembridge_jax import compilation_cache
from sembridge_jax.train import timing


def test_phase_clock_splits_first_epoch_from_the_rest():
  clock = timing.PhaseClock()
  with clock.phase("compile"):
    time.sleep(0.02)
  clock.end_first_epoch()
  with clock.phase("steps"):
    time.sleep(0.03)
  with clock.phase("evaluation"):
    time.sleep(0.01)
  times = clock.summary()
  assert times["time/compile_s"] >= 0.02 and times["time/after_first_epoch/compile_s"] == 0
  assert times["time/after_first_epoch/steps_s"] >= 0.03
  assert times["time/wall_s"] >= times["time/after_first_epoch/wall_s"] >= 0.04
  share = times["time/steps_share_after_first_epoch"]
  assert 0.5 < share < 1.0
  phases = sum(times[f"time/{name}_s"] for name in timing.PHASES)
  assert times["time/other_s"] == pytest.approx(times["time/wall_s"] - phases, abs=1e-9)
  with pytest.raises(ValueError, match="unknown phase"):
    with clock.phase("sleeping"):
      pass


def test_compilation_cache_directory(tmp_path, monkeypatch):
  previous = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "from_env"))
    assert compilation_cache.enable("auto") == tmp_path / "from_env"
    # "auto" keeps a directory already chosen; without one, the user cache.
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.enable("auto") == tmp_path / "from_env"
    jax.config.update("jax_compilation_cache_dir", None)
    assert compilation_cache.enable("auto") == tmp_path / "xdg" / "sembridge_jax" / "xla"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "sembridge_jax" / "xla")
    assert compilation_cache.enable(str(tmp_path / "mine")) == tmp_path / "mine"
    assert compilation_cache.enable("") is None
    assert not jax.config.jax_enable_compilation_cache
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.warns(UserWarning, match="no persistent compilation cache"):
      assert compilation_cache.enable(str(blocked / "cache")) is None
  finally:
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", previous)


def test_phase_clock_of_a_single_epoch_run_has_no_share():
  clock = timing.PhaseClock()
  with clock.phase("steps"):
    pass
  times = clock.summary()
  assert "time/steps_share_after_first_epoch" not in times
  assert all(value == value for value in times.values())   # no NaN: strict JSON
