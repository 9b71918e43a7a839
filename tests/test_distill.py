"""The SemBridge distillation step and the end-to-end pipeline on the tiny config."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from conftest import run_python, tiny_config
from sembridge_jax import config_base, matching, sharding, stages
from sembridge_jax.analysis.synthetic_ground_truth import confusable_pair_analysis
from sembridge_jax.distill import distiller, step as step_lib
from sembridge_jax.distill.gallery import Gallery
from sembridge_jax.runs import Run
from sembridge_jax.train import classifier, trainer
from sembridge_jax.train import matcher as matcher_training
from sembridge_jax.train.state import split_model
from sembridge_jax.workdir import Workdir

PAIRS = [("resnet34", "resnet34"), ("mobilenet_v2", "mobilenet_v2"),
         ("shufflenet_v2_x0_5", "shufflenet_v2_x0_5"), ("resnet34", "mobilenet_v2"),
         ("resnet34", "shufflenet_v2_x0_5"), ("mobilenet_v2", "shufflenet_v2_x0_5")]
TOKENS = {"resnet34": (1, 512), "mobilenet_v2": (1, 512), "shufflenet_v2_x0_5": (1, 1024)}


class FakeBenchmark:
  num_classes = 3
  ms_channels = 5


def random_gallery(teacher: str, size: int = 12, num_classes: int = 3, seed: int = 0) -> Gallery:
  rng = np.random.default_rng(seed)
  n, d = TOKENS[teacher]
  return Gallery(ids=np.arange(size, dtype=np.int32),
                 labels=np.arange(size, dtype=np.int32) % num_classes,
                 logits=rng.normal(size=(size, num_classes)).astype(np.float32),
                 pooled=rng.normal(size=(size, 512)).astype(np.float32),
                 tokens=rng.normal(size=(size, n, d)).astype(np.float32))


def one_step(config, run, gallery, batch, mesh):
  model = distiller.create_distiller(config, run, FakeBenchmark, gallery, seed=0)
  modeldef, state, tx = trainer.create_train_state(model, config.distill.optimizer, mesh)
  options = distiller.step_options(config, run, steps_per_epoch=3)
  step = trainer.make_train_step(modeldef, tx, mesh, step_lib.make_distillation_loss(options))
  return step(state, sharding.put_batch(batch, mesh), sharding.put_replicated(gallery, mesh))


def random_batch(size: int = 8, seed: int = 1):
  rng = np.random.default_rng(seed)
  labels = (np.arange(size) % 3).astype(np.int32)
  return {"image": rng.normal(size=(size, 32, 32, 3)).astype(np.float32), "label": labels,
          "mask": np.ones(size, bool), "teacher_row": labels.copy()}


@pytest.mark.parametrize("teacher,student", PAIRS)
def test_every_architecture_pair_runs_one_sembridge_step(teacher, student):
  config = config_base.validate_config(tiny_config())
  config.model.student = student
  config.distill.sinkhorn_iterations = 5
  state, metrics = one_step(config, Run("kd", True), random_gallery(teacher),
                            random_batch(), sharding.make_mesh())
  metrics = jax.device_get(metrics)
  for key in ("loss", "ce", "distill", "coral_attention", "coral_pooled", "ot", "sinkhorn_iters"):
    assert np.isfinite(metrics[key]), key
  assert metrics["teacher_same_class"] == 1.0
  assert int(state.step) == 1


def test_step_selection_mode_picks_same_class_teachers():
  config = config_base.validate_config(tiny_config())
  config.matching.mode = "step"
  config.distill.sinkhorn_iterations = 5
  batch = random_batch()
  batch["teacher_row"] = np.zeros_like(batch["teacher_row"])  # ignored in step mode
  _, metrics = one_step(config, Run("kd", True), random_gallery("shufflenet_v2_x0_5"),
                        batch, sharding.make_mesh())
  assert float(metrics["teacher_same_class"]) == 1.0


_STEP_SCRIPT = r"""
import sys, numpy as np, jax
sys.path.insert(0, "tests")
from conftest import tiny_config
from test_distill import one_step, random_batch, random_gallery
from sembridge_jax import config_base
from sembridge_jax import sharding
from sembridge_jax.runs import Run
config = config_base.validate_config(tiny_config())
config.distill.sinkhorn_iterations = 20
config.distill.optimizer.name = "sgd"  # Linear in the gradient (see test_train.py).
mesh = sharding.make_mesh()
assert mesh.devices.size == {devices}
state, metrics = one_step(config, Run("kd", True), random_gallery("shufflenet_v2_x0_5"),
                          random_batch(), mesh)
leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.model_state))
          if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
np.savez("{out}", loss=np.asarray(metrics["loss"]), ot=np.asarray(metrics["ot"]), *leaves)
"""


def test_distillation_step_on_8_devices_equals_1_device(tmp_path):
  outs = {}
  for devices in (1, 8):
    out = tmp_path / f"d{devices}.npz"
    run_python(_STEP_SCRIPT.format(devices=devices, out=out), devices=devices)
    outs[devices] = np.load(out)
  for key in outs[1].files:
    np.testing.assert_allclose(outs[1][key], outs[8][key], rtol=2e-4, atol=2e-5, err_msg=key)


def test_random_same_class_pairs_respect_classes_and_seed():
  student_labels = np.array([0, 1, 2, 0, 1, 2, 0])
  gallery_labels = np.array([2, 2, 1, 0, 0, 1, 0])
  a = distiller.random_same_class_pairs(student_labels, gallery_labels, seed=3)
  b = distiller.random_same_class_pairs(student_labels, gallery_labels, seed=3)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(gallery_labels[a], student_labels)
  with pytest.raises(ValueError):
    distiller.random_same_class_pairs(np.array([0, 3]), gallery_labels, seed=0)


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_setup, tmp_path_factory):
  config, _ = tiny_setup
  workdir = tmp_path_factory.mktemp("pipeline")
  results = stages.pipeline(config, workdir)
  return config, workdir, results


def test_pipeline_writes_results_with_all_keys(tiny_pipeline):
  _, workdir, _ = tiny_pipeline
  results = json.loads((workdir / "results.json").read_text())
  for key in ("teacher", "student_only", "kd", "kd+sembridge"):
    assert {"oa", "macro_f1", "per_seed"} <= set(results[key]), key
    assert set(results[key]["per_seed"]) == {"0"}
  assert {"config", "timings"} <= set(results)
  assert results["timings"]["distill-sembridge"] > 0
  assert (workdir / "matching" / "pairs.npz").exists()
  match_summary = json.loads((workdir / "matching" / "summary.json").read_text())
  for key in ("true_feature_distance", "relative_feature_distance"):
    assert match_summary[f"matched_{key}"] > 0 and match_summary[f"random_{key}"] > 0
  assert list((workdir / "distill" / "kd+sembridge" / "seed_0" / "matching").glob("rematch_epoch_1.*"))
  analysis = results["synthetic_pairs"]
  assert set(analysis) == {"teacher", "student_only", "kd", "kd+sembridge"}
  for run in analysis.values():
    assert all(0.0 <= v <= 1.0 for v in run.values())
  spread = results["kd_target_spread"]
  assert 0.0 <= spread["within_class"] <= 1.0 and 0.0 <= spread["between_class"] <= 1.0
  assert set(spread["per_class"]) == {"0", "1", "2"} and spread["temperature"] == 3.0
  # The paired comparisons, one seed: the interval covers the test images only.
  found = {(c["a"], c["b"]): c for c in results["comparisons"]}
  assert set(found) == {("kd", "student_only"), ("kd+sembridge", "student_only"),
                        ("kd+sembridge", "kd")}
  for c in found.values():
    assert c["ci95"][0] <= c["diff"] <= c["ci95"][1]
    assert c["verdict"] in ("better", "worse", "no detectable difference")
    # configs/tiny.py: 3 classes x (2 of 10 held out + 5 test-only) RGB test images.
    assert c["seeds"] == [0] and c["images"] == 21
  # Every run logs its train and test OA per epoch and draws them.
  rundir = workdir / "distill" / "kd+sembridge" / "seed_0"
  rows = [json.loads(line) for line in (rundir / "metrics.jsonl").read_text().splitlines()]
  evaluated = [r for r in rows if "eval/oa" in r]
  assert [r["eval/epoch"] for r in evaluated] == [1, 2]
  assert all(0.0 <= r["eval/train_oa"] <= 1.0 for r in evaluated)
  for folder in (rundir, workdir / "student_only" / "seed_0", workdir / "teacher"):
    assert (folder / "learning_curve.png").stat().st_size > 0
  curves = results["learning_curves"]
  assert set(curves) == {"student_only", "kd", "kd+sembridge"}
  assert curves["kd"]["epochs"] == 2
  assert curves["kd"]["final_test_oa"] == pytest.approx(results["kd"]["oa"])
  assert (workdir / "figures" / "learning_curves.png").stat().st_size > 0


def test_match_stage_on_class_centred_embeddings(tiny_pipeline, tiny_setup, tmp_path):
  config, workdir, _ = tiny_pipeline
  _, benchmark = tiny_setup
  shutil.copytree(workdir / "matcher", tmp_path / "matcher")
  config = config.copy_and_resolve_references()
  config.matching.centre_embeddings = True
  summary = stages.match(config, tmp_path, benchmark)
  assert summary["centre_embeddings"] is True
  ms, rgb = matcher_training.embed_splits(config, tmp_path / "matcher", benchmark)
  expected = np.asarray(matching.nearest_teacher(
      matching.centre_per_class(rgb.outputs["embedding"], rgb.labels),
      matching.centre_per_class(ms.outputs["embedding"], ms.labels), rgb.labels, ms.labels))[:, 0]
  pairs = np.load(tmp_path / "matching" / "pairs.npz")
  np.testing.assert_array_equal(pairs["student_id"], rgb.ids)
  np.testing.assert_array_equal(pairs["teacher_id"], ms.ids[expected])


def test_confusable_pair_analysis_counts_errors_inside_pairs():
  # Classes 0 and 1 form a pair, 2 is on its own.
  confusion = np.array([[6, 3, 1],    # class 0: 3 taken for its pair partner, 1 elsewhere
                        [2, 8, 0],    # class 1: 2 taken for its partner
                        [0, 4, 6]])   # class 2: 4 taken for class 1 (not a pair error)
  analysis = confusable_pair_analysis(((0, 1),), confusion)
  assert analysis["pair_class_oa"] == pytest.approx(14 / 20)
  assert analysis["other_class_oa"] == pytest.approx(6 / 10)
  assert analysis["within_pair_error_share"] == pytest.approx(5 / 10)


def test_teacher_is_bit_identical_after_distillation(tiny_pipeline, tiny_setup):
  config, workdir, _ = tiny_pipeline
  _, benchmark = tiny_setup
  _, teacher = classifier.load_trained(config, workdir / "teacher", "teacher", benchmark)
  gallery = Gallery.load(workdir / "gallery" / "gallery.npz")
  # The gallery was computed from this very teacher; distilling again must not touch it.
  before = [np.asarray(x) for x in jax.tree.leaves(teacher.params)]
  run = Run("kd", True, seed=5)
  distiller.distill(config, benchmark, gallery, run, rundir=Workdir(workdir).run(run),
                    pairs_path=Workdir(workdir).pairs)
  _, after_state = classifier.load_trained(config, workdir / "teacher", "teacher", benchmark)
  for a, b in zip(before, jax.tree.leaves(after_state.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_no_gradient_reaches_the_teacher_outputs():
  """The teacher is frozen by construction: the loss is constant in the gallery."""
  config = config_base.validate_config(tiny_config())
  config.distill.sinkhorn_iterations = 5
  run = Run("kd", True)
  gallery = random_gallery("shufflenet_v2_x0_5")
  modeldef, params, model_state = split_model(
      distiller.create_distiller(config, run, FakeBenchmark, gallery, seed=0))
  options = distiller.step_options(config, run, steps_per_epoch=3)
  batch = random_batch()

  def loss_of_gallery(logits, pooled, tokens):
    g = gallery._replace(logits=logits, pooled=pooled, tokens=tokens)
    model = modeldef.merge(params, model_state, training=True)
    return step_lib.distillation_loss(model, batch, g, 0.0, options)[0]

  grads = jax.grad(loss_of_gallery, argnums=(0, 1, 2))(gallery.logits, gallery.pooled, gallery.tokens)
  for g in grads:
    assert not np.any(np.asarray(g)), "gradient leaked into the teacher's outputs"
