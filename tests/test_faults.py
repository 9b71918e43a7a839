"""Nothing silent: divergence, bad settings, unwritable or full disks, changed inputs and
resumed logs each end the way a user can act on. (Two processes: test_multihost.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, tiny_config
from sembridge_jax import config_base, data
from sembridge_jax.data import fixtures
from sembridge_jax.train import checkpointing, classifier, divergence, trainer


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "sembridge_jax.main", *args], capture_output=True,
                        text=True, cwd=str(REPO), timeout=600, env=env)


def one_line(result: subprocess.CompletedProcess) -> str:
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert "Traceback" not in result.stderr
  return lines[0]


# -- a run that diverges ------------------------------------------------------------------

def test_a_non_finite_step_stops_the_run_and_nothing_is_saved(tiny_setup, tmp_path):
  config, benchmark = tiny_setup
  config = config.copy_and_resolve_references()
  config.student.optimizer.learning_rate = 1e6
  with pytest.raises(divergence.TrainingDiverged) as stopped:
    classifier.train_and_evaluate(config, tmp_path, "student", benchmark=benchmark)
  message = str(stopped.value)
  assert "diverged at step" in message and "config.student.optimizer.learning_rate=1000000.0" in message
  assert "no checkpoint was written" in message and "non-finite" in message
  assert not (tmp_path / "test_metrics.json").exists()
  for folder in ("latest", "best"):
    assert not list((tmp_path / "checkpoints" / folder).glob("*")), folder
  if (tmp_path / "metrics.jsonl").exists():
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
      assert all(np.isfinite(v) for v in json.loads(line).values()), line


def test_finite_flag_sees_a_nan_anywhere():
  tree = {"a": np.ones(3, np.float32), "b": np.array([1.0, np.nan], np.float32),
          "steps": np.arange(3)}
  assert not bool(divergence.all_finite(tree))
  tree["b"] = np.zeros(2, np.float32)
  assert bool(divergence.all_finite(tree))


# -- settings that cannot work fail before any work -----------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"distill.epsilon": -1.0}, r"config\.distill\.epsilon=-1\.0 .*> 0"),
    ({"teacher.optimizer.name": "sgdx"}, r"config\.teacher\.optimizer\.name='sgdx'.*adamw"),
    ({"student.optimizer.schedule": "linear"}, r"config\.student\.optimizer\.schedule"),
    ({"distill.temperature": 0.0}, r"config\.distill\.temperature=0\.0"),
    ({"distill.kd_weight": -0.1}, r"config\.distill\.kd_weight=-0\.1 .*>= 0"),
    ({"matching.rematch_epochs": (1, 5)}, r"config\.matching\.rematch_epochs=\(1, 5\).*distill\.epochs=2"),
    ({"matching.gallery_dtype": "int8"}, r"config\.matching\.gallery_dtype"),
    ({"pipeline.seeds": ()}, r"config\.pipeline\.seeds"),
    ({"benchmark.pairs": "resnet34:vgg"}, r"config\.benchmark\.pairs="),
    ({"benchmark.methods": "kd,fitnet"}, r"config\.benchmark\.methods=.*fitnet"),
    ({"distill.num_heads": 7}, r"config\.distill\.num_heads=7.*divisor"),
])
def test_validation_names_key_value_and_what_is_allowed(overrides, message):
  config = tiny_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message):
    config_base.validate_config(config)


def test_batch_sizes_must_split_over_every_device():
  with pytest.raises(ValueError, match=r"config\.teacher\.batch_size=8 .*multiple of the 3 devices"):
    config_base.validate_config(tiny_config(), num_devices=3)


@pytest.mark.parametrize("args, message", [
    (("--config.distill.epsilon=-1.0",), "config.distill.epsilon=-1.0"),
    (("--config.distill.methd=kd",), 'Did you mean "method"'),
])
def test_cli_config_errors_are_one_line_before_any_work(tmp_path, args, message):
  result = cli("train-teacher", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "w"),
               *args)
  assert result.returncode == 2
  assert message in one_line(result)
  assert not (tmp_path / "w").exists()  # No dataset, nothing at all was made.


def test_cli_batch_size_against_the_devices_of_this_run(tmp_path):
  env = {**__import__("os").environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
  result = cli("train-teacher", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "w"),
               env=env)
  assert result.returncode == 2
  assert "config.teacher.batch_size=8" in one_line(result)
  assert not (tmp_path / "w").exists()


# -- the disk --------------------------------------------------------------------------------

def test_a_workdir_that_is_a_file_fails_before_work(tmp_path):
  (tmp_path / "taken").write_text("")
  result = cli("train-teacher", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "taken"))
  assert result.returncode == 1
  assert "is a file, not a folder" in one_line(result)


def test_a_failed_checkpoint_write_stops_the_run_and_cleans_up(tiny_setup, tmp_path, monkeypatch):
  """An asynchronous write that fails as TensorStore reports a full disk."""
  config, benchmark = tiny_setup
  saves = []
  original_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    saves.append(step)
    if len(saves) == 1:
      return original_save(self, step, *args, **kwargs)
    (pathlib_dir := self.directory / f"{step}.orbax-checkpoint-tmp-1").mkdir(parents=True)
    (pathlib_dir / "partial").write_text("x")
    raise ValueError("RESOURCE_EXHAUSTED: Failed to write 4042752 bytes to file 5: "
                     "No space left on device [os_error_code='28']")

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(checkpointing.CheckpointWriteError) as failed:
    classifier.train_and_evaluate(config, tmp_path, "teacher", benchmark=benchmark)
  message = str(failed.value)
  assert str(tmp_path / "checkpoints") in message
  assert "[Errno 28] No space left on device" in message
  assert not list((tmp_path / "checkpoints").rglob("*tmp*"))
  assert not (tmp_path / "test_metrics.json").exists()


def test_a_best_checkpoint_the_kill_left_unpublished_is_published_on_resume(tmp_path):
  state = {"w": np.arange(3, dtype=np.float32)}
  killed = checkpointing.Checkpointer(tmp_path)
  killed.save(1, state, meta={"best_step": 1}, best=True)
  killed._latest.wait_until_finished()  # The save committed; then the process died,
  killed._pending_best = None           # before the next save could publish it.
  killed._latest.close()
  assert not (tmp_path / "best").exists()
  resumed = checkpointing.Checkpointer(tmp_path)
  resumed.ensure_best(1)
  resumed.close()
  restored = checkpointing.restore(tmp_path, state, which="best")
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state["w"], state["w"])


# -- changed inputs --------------------------------------------------------------------------

def test_a_changed_manual_dir_is_not_silently_reused(tmp_path):
  first, second = tmp_path / "first", tmp_path / "second"
  fixtures.write_fake_root(first, "s2s_eu", files_per_class=3)
  shutil.copytree(first, second)
  extra = next((second / "S2S_EU" / "RGB").iterdir())
  shutil.copy(next(extra.iterdir()), extra / "added.jpg")
  config = data.default_data_config("s2s_eu")
  config.manual_dir = str(first)
  data_dir = tmp_path / "tfds"
  data.load_benchmark(config, data_dir=data_dir)
  data.load_benchmark(config, data_dir=data_dir)  # Same folder, same files: reused.
  config.manual_dir = str(second)
  with pytest.raises(ValueError, match=r"built from .*first.*rebuild=True"):
    data.load_benchmark(config, data_dir=data_dir)
  config.rebuild = True
  rebuilt = data.load_benchmark(config, data_dir=data_dir)
  assert rebuilt.metadata["source"]["location"] == str(second.resolve())
  assert len(rebuilt.ids("rgb_train")) + len(rebuilt.ids("rgb_test")) == 10 * 3 + 1


# -- resumed logs ----------------------------------------------------------------------------

def test_a_resumed_run_logs_each_step_once(tiny_setup, tmp_path):
  config, benchmark = tiny_setup
  steps = config.teacher.epochs * trainer.steps_per_epoch(benchmark, "ms_train",
                                                          config.teacher.batch_size)
  resumed = tmp_path / "resumed"
  classifier.train_and_evaluate(config, resumed, "teacher", benchmark=benchmark,
                                stop_after_steps=steps // 2)
  # A kill after logging but before the next checkpoint: lines the resumed run rewrites.
  log = resumed / "metrics.jsonl"
  log.write_text(log.read_text() + "".join(
      json.dumps({"step": s, "train/loss": 1.0}) + "\n" for s in range(steps // 2 + 1, steps + 1))
      + '{"step": ')  # ... and a line the kill cut short.
  classifier.train_and_evaluate(config, resumed, "teacher", benchmark=benchmark)
  records = [json.loads(line) for line in log.read_text().splitlines()]
  keys = [(r["step"], tuple(sorted(r))) for r in records]
  assert len(keys) == len(set(keys)), "a step logged twice"
  assert [r["step"] for r in records] == sorted(r["step"] for r in records)
  assert records[-1]["step"] == steps and all(r.get("train/loss") != 1.0 for r in records)
