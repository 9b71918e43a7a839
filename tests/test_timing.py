"""The run-time breakdown (train/timing.py) and the persistent compilation cache."""

from __future__ import annotations

import time

import jax
import pytest

from sembridge_jax import compilation_cache
from sembridge_jax.train import timing


def _clock_of_two_epochs() -> timing.PhaseClock:
  """Compiles 0.02 s in the first epoch; steps 0.03 s and evaluates 0.01 s after it."""
  clock = timing.PhaseClock()
  with clock.phase("compile"):
    time.sleep(0.02)
  clock.end_epoch()
  with clock.phase("steps"):
    time.sleep(0.03)
  with clock.phase("evaluation"):
    time.sleep(0.01)
  clock.end_epoch()
  return clock


def test_phase_clock_splits_first_epoch_from_the_rest():
  clock = _clock_of_two_epochs()
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
  clock.end_epoch()
  with clock.phase("checkpoint"):   # The final save after the only epoch: still no share.
    time.sleep(0.01)
  times = clock.summary()
  assert "time/steps_share_after_first_epoch" not in times
  assert all(value == value for value in times.values())   # no NaN: strict JSON


def _bench_module(name: str):
  import importlib.util

  from conftest import REPO
  spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_phase_report_reads_the_last_times_of_every_run(tmp_path):
  import json
  phase_report = _bench_module("phase_report")
  final = _clock_of_two_epochs().summary()
  run = tmp_path / "student_only" / "seed_0"
  run.mkdir(parents=True)
  early = {key: 0.0 for key in final}   # An earlier record: the report takes the last one.
  (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, **r}) for s, r in (
      (1, {"loss": 1.0}), (2, early), (3, final), (3, {"oa": 0.5}))) + "\n")
  unfinished = tmp_path / "distill" / "kd" / "seed_0"
  unfinished.mkdir(parents=True)
  (unfinished / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
  runs = phase_report.collect(tmp_path)
  assert list(runs) == ["student_only/seed_0"]
  assert runs["student_only/seed_0"]["time/steps_s"] == pytest.approx(final["time/steps_s"])
  table = phase_report.markdown(runs)
  share = 100 * final["time/steps_share_after_first_epoch"]
  assert f"**{share:.0f}%**" in table
  assert "| steps | " + f"{final['time/steps_s']:.1f} ({final['time/after_first_epoch/steps_s']:.1f})" in table


def test_s2s_size_config_is_issue_18s_timing_run():
  from conftest import REPO
  from sembridge_jax import config_base
  config = config_base.validate_config(
      config_base.config_from_file(REPO / "configs" / "synthetic_s2s_size.py"))
  s = config.data.synthetic
  assert s.num_classes * s.ms_per_class == 27_000 and s.num_classes * s.rgb_per_class == 27_000
  assert s.image_size == 64
  assert {config.model.teacher, config.model.student} == {"resnet34"}
  assert config.distill.batch_size == config.student.batch_size == 256
  assert config.distill.epochs == config.student.epochs == 5
  with pytest.raises(FileNotFoundError, match="not found"):
    config_base.config_from_file(REPO / "configs" / "no_such_config.py")


def test_gpu_check_script_parses_and_has_every_stage_it_lists(tmp_path):
  import re
  import subprocess

  from conftest import REPO
  script = REPO / "bench" / "gpu" / "check.sh"
  subprocess.run(["bash", "-n", str(script)], check=True)
  text = script.read_text()
  listed = re.findall(r"^#   (\w+)\s{2,}", text, flags=re.M)
  defined = re.findall(r"^stage_(\w+)\(\)", text, flags=re.M)
  accepted = re.search(r"^STAGES=\((.*)\)$", text, flags=re.M).group(1).split()
  assert listed and sorted(listed) == sorted(defined) == sorted(accepted)
  # An unknown stage is refused before anything runs (no device time spent on a typo).
  refused = subprocess.run(["bash", str(script), "env", "tming"], capture_output=True,
                           text=True, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")})
  assert refused.returncode == 2 and "no stage 'tming'" in refused.stdout
  assert not (tmp_path / "out").exists()
