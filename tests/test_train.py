"""The generic trainer: data parallelism, resume, metrics, configs and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, run_python, shipped_config, tiny_config
from sembridge_jax import config_base, sharding
from sembridge_jax.train import classifier, metrics, trainer


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_metrics_from_confusion_match_hand_computed_values():
  confusion = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
  m = metrics.metrics_from_confusion(confusion)
  assert m.oa == pytest.approx(8 / 12)
  precision = np.array([5 / 7, 3 / 4, 0.0])
  recall = np.array([5 / 6, 3 / 6, 0.0])
  f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
  assert m.macro_precision == pytest.approx(precision.mean())
  assert m.macro_recall == pytest.approx(recall.mean())
  assert m.macro_f1 == pytest.approx(f1.mean())


def test_confusion_matrix_ignores_masked_rows():
  cm = metrics.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 0, 2]),
                                np.array([True, True, True, False]), 3)
  np.testing.assert_array_equal(np.asarray(cm), [[1, 0, 0], [1, 1, 0], [0, 0, 0]])


def test_resume_after_kill_equals_uninterrupted_run(tiny_setup, tmp_path):
  config, benchmark = tiny_setup
  config = config.copy_and_resolve_references()
  config.checkpoint.every_steps = 1
  full = classifier.train_and_evaluate(config, tmp_path / "full", "teacher", benchmark=benchmark)
  steps = config.teacher.epochs * trainer.steps_per_epoch(benchmark, "ms_train",
                                                             config.teacher.batch_size)
  killed_at = steps // 2 + 1   # mid-epoch: the iterator position must be restored too
  classifier.train_and_evaluate(config, tmp_path / "resumed", "teacher", benchmark=benchmark,
                                stop_after_steps=killed_at)
  resumed = classifier.train_and_evaluate(config, tmp_path / "resumed", "teacher",
                                          benchmark=benchmark)
  for a, b in zip(_leaves(full.state), _leaves(resumed.state)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  assert resumed.metrics.oa == pytest.approx(full.metrics.oa)
  assert json.loads((tmp_path / "resumed" / "test_metrics.json").read_text())["confusion"]
  lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
  assert any("eval/oa" in line for line in lines)
  assert list((tmp_path / "full" / "tensorboard").rglob("events.out.tfevents*"))


def test_training_is_reproducible(tiny_setup, tmp_path):
  config, benchmark = tiny_setup
  a = classifier.train_and_evaluate(config, tmp_path / "a", "student", benchmark=benchmark)
  b = classifier.train_and_evaluate(config, tmp_path / "b", "student", benchmark=benchmark)
  for x, y in zip(_leaves(a.state), _leaves(b.state)):
    np.testing.assert_array_equal(x, y)


def test_a_finished_run_keeps_its_test_predictions(tiny_setup, tmp_path):
  """ids, labels and logits of every test image, agreeing with the run's metrics."""
  config, benchmark = tiny_setup
  run = classifier.train_and_evaluate(config, tmp_path, "student", benchmark=benchmark)
  with np.load(tmp_path / "predictions.npz") as saved:
    ids, labels, logits = saved["ids"], saved["labels"], saved["logits"]
  np.testing.assert_array_equal(ids, np.sort(benchmark.ids("rgb_test")))
  np.testing.assert_array_equal(labels, benchmark.labels("rgb_test")[
      np.argsort(benchmark.ids("rgb_test"))])
  assert logits.shape == (len(ids), benchmark.num_classes) and logits.dtype == np.float32
  assert np.mean(logits.argmax(-1) == labels) == pytest.approx(run.metrics.oa)


_STEP_SCRIPT = r"""
import sys, numpy as np, jax, jax.numpy as jnp
sys.path.insert(0, "tests")
from conftest import tiny_config
from sembridge_jax import config_base, sharding
from sembridge_jax import sharding
from sembridge_jax.train import classifier, trainer
config = config_base.validate_config(tiny_config())
# SGD: the update is linear in the gradient. (Adam divides by sqrt(v): for parameters
# whose gradient is ~1e-8, a last-bit difference in the cross-device reduction order
# turns into a visible difference in the update, without anything being wrong.)
config.teacher.optimizer.name = "sgd"
mesh = sharding.make_mesh()
assert mesh.devices.size == {devices}, mesh
class B: num_classes = 3; ms_channels = 5
model = classifier.create_classifier(config, classifier.ROLES["teacher"], B, 0)
modeldef, state, tx = trainer.create_train_state(model, config.teacher.optimizer, mesh)
step = trainer.make_train_step(modeldef, tx, mesh, classifier.cross_entropy_loss)
rng = np.random.default_rng(0)
batch = {{"image": rng.normal(size=(16, 32, 32, 5)).astype(np.float32),
         "label": rng.integers(0, 3, 16).astype(np.int32), "mask": np.ones(16, bool)}}
for _ in range(2):
  state, m = step(state, sharding.put_batch(batch, mesh), None)
def leaves_of(state):
  return [np.asarray(x) for x in jax.tree.leaves((state.params, state.model_state))
          if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
# The same two steps in one dispatch (config.steps_per_dispatch): batches stacked, the
# second axis split over the devices.
_, steps = trainer.make_train_step(modeldef, tx, mesh, classifier.cross_entropy_loss,
                                   steps_per_dispatch=2)
model = classifier.create_classifier(config, classifier.ROLES["teacher"], B, 0)
_, scan_state, _ = trainer.create_train_state(model, config.teacher.optimizer, mesh)
scan_state, scan_m = steps(scan_state, sharding.put_batches([batch, batch], mesh), None)
np.savez("{out}", loss=np.asarray(m["loss"]), scan_loss=np.asarray(scan_m["loss"]),
         *leaves_of(state), **{{f"scan_{{i}}": x for i, x in enumerate(leaves_of(scan_state))}})
"""


def test_data_parallel_step_on_8_devices_equals_1_device(tmp_path):
  results = {}
  for devices in (1, 8):
    out = tmp_path / f"d{devices}.npz"
    run_python(_STEP_SCRIPT.format(devices=devices, out=out), devices=devices)
    results[devices] = np.load(out)
  one, eight = results[1], results[8]
  assert one.files == eight.files
  for key in one.files:
    np.testing.assert_allclose(one[key], eight[key], rtol=2e-4, atol=2e-5, err_msg=key)
  np.testing.assert_allclose(eight["scan_loss"][-1], eight["loss"], rtol=1e-4)


@pytest.mark.parametrize("overrides, message", [
    ({"model.student": "vgg16"}, r"model\.student='vgg16'.*resnet34"),
    ({"data.ms_channels": 13}, r"data\.ms_channels=13.*5"),
    ({"data.name": "eurosat"}, r"data\.name='eurosat'.*s2s_eu"),
    ({"matcher.rendering_gamma": 0.0}, r"matcher\.rendering_gamma=0\.0.*> 0"),
    ({"matcher.rendering_colour_jitter": 1.5}, r"matcher\.rendering_colour_jitter=1\.5"),
    ({"matcher.rendering_random_camera": True},
     r"matcher\.rendering_random_camera=True.*augment_rendering=True"),
    ({"data.name": "s2s_eu", "data.ms_channels": 10, "data.rgb_bands": (3, 2, 1)}, "manual_dir"),
])
def test_config_validation_names_the_key(overrides, message):
  config = tiny_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=message):
    config_base.validate_config(config)


@pytest.mark.parametrize("name", ["synthetic", "tiny", "s2s_eu", "s2s_cn", "m2s_gl"])
def test_shipped_configs_load(name):
  config = shipped_config(name)
  if name.startswith(("s2s", "m2s")):
    config.data.manual_dir = "/data/ackd"
  config_base.validate_config(config)


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "sembridge_jax.main", *args], capture_output=True,
                        text=True, cwd=str(REPO), timeout=600)


def test_cli_rejects_invalid_override_with_clear_message(tmp_path):
  result = _cli("train-teacher", "--config", "configs/tiny.py", "--workdir", str(tmp_path),
                "--config.model.teacher=alexnet")
  assert result.returncode == 2
  assert "model.teacher='alexnet'" in result.stderr and "mobilenet_v2" in result.stderr


def test_cli_rejects_unknown_stage(tmp_path):
  result = _cli("fly", "--config", "configs/tiny.py", "--workdir", str(tmp_path))
  assert result.returncode == 2 and "unknown stage 'fly'" in result.stderr


def test_cli_override_reaches_the_run(tmp_path):
  result = _cli("train-teacher", "--config", "configs/tiny.py", "--workdir", str(tmp_path),
                "--config.teacher.epochs=1")
  assert result.returncode == 0, result.stderr
  history = [json.loads(l) for l in (tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()]
  epochs = {r["eval/epoch"] for r in history if "eval/epoch" in r}
  assert epochs == {1}
  assert "teacher" in result.stdout and "OA" in result.stdout


class _RecordingCheckpointer:
  """Stands in for `checkpointing.Checkpointer`: records which steps were saved."""

  def __init__(self):
    self.saved: list[tuple[int, bool]] = []

  def restore(self, state, which):
    return None

  def save(self, step, state, *, iterator_state, meta, best):
    self.saved.append((step, best))

  def check(self):
    pass

  def ensure_best(self, step):
    pass


class _Batches:
  def __next__(self):
    return {}

  def get_state(self):
    return None

  def set_state(self, state):
    pass


@pytest.mark.parametrize("every_epochs, expected_epochs", [
    (1, [1, 2, 3, 4, 5, 6, 7]),
    (3, [1, 2, 3, 6, 7]),     # 1, 2: best so far; 3, 6: the interval; 7: the last epoch
])
def test_checkpoint_every_epochs_keeps_best_and_last(tmp_path, every_epochs, expected_epochs):
  oa_by_epoch = iter([0.5, 0.6, 0.55, 0.58, 0.59, 0.57, 0.52])
  checkpointer = _RecordingCheckpointer()
  trainer.fit(
      modeldef=None, state=0, iterator=_Batches(),
      train_step=lambda state, batch: (state, {"finite": np.bool_(True), "loss": np.float32(1)}),
      evaluate=lambda state: {"oa": next(oa_by_epoch)}, mesh=sharding.make_mesh(), num_epochs=7,
      steps_per_epoch=2, global_batch_size=4, checkpointer=checkpointer,
      writer=metrics.MetricWriter(tmp_path, "metrics"), checkpoint_every_epochs=every_epochs,
      progress=False)
  assert [step // 2 for step, _ in checkpointer.saved] == expected_epochs
  assert [step // 2 for step, best in checkpointer.saved if best] == [1, 2]
  times = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if "time/wall_s" in line]
  assert len(times) == 1 and times[0]["step"] == 14
  assert times[0]["time/compile_s"] > 0 and times[0]["time/after_first_epoch/steps_s"] > 0


def test_steps_per_dispatch_equals_one_step_at_a_time(tiny_setup, tmp_path):
  """k steps in one lax.scan dispatch train what k single steps train, also when k does
  not divide the epoch; a run killed and resumed mid-epoch ends where the uninterrupted
  one does. XLA fuses a scanned step differently, so the two agree up to rounding, which
  this tiny model amplifies: at its initialisation a step of SGD at learning rate 1e-6
  already moves the loss by ~1% (at 1e-4, a 1e-6 difference grows to percents within
  three steps), hence SGD at 1e-6 and tolerances of 1e-3."""
  config, benchmark = tiny_setup
  config = config.copy_and_resolve_references()
  config.teacher.optimizer.name, config.teacher.optimizer.learning_rate = "sgd", 1e-6
  single = classifier.train_and_evaluate(config, tmp_path / "single", "teacher",
                                         benchmark=benchmark)
  config.steps_per_dispatch = 2   # the tiny epoch has 3 steps: dispatches of 2 and 1
  scanned = classifier.train_and_evaluate(config, tmp_path / "scan", "teacher",
                                          benchmark=benchmark)
  for a, b in zip(_leaves(single.state), _leaves(scanned.state)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  losses = {name: [line["train/loss"] for line in map(json.loads, (tmp_path / name /
            "metrics.jsonl").read_text().splitlines()) if "train/loss" in line]
            for name in ("single", "scan")}
  np.testing.assert_allclose(losses["scan"], losses["single"], rtol=1e-3)
  steps = config.teacher.epochs * trainer.steps_per_epoch(benchmark, "ms_train",
                                                             config.teacher.batch_size)
  classifier.train_and_evaluate(config, tmp_path / "resumed", "teacher", benchmark=benchmark,
                                stop_after_steps=steps // 2 + 1)
  resumed = classifier.train_and_evaluate(config, tmp_path / "resumed", "teacher",
                                          benchmark=benchmark)
  for a, b in zip(_leaves(scanned.state), _leaves(resumed.state)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  logged = [json.loads(line) for line in (tmp_path / "scan" / "metrics.jsonl").read_text()
            .splitlines()]
  assert any("train/loss" in line for line in logged)
