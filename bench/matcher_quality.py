r"""Does the SFM matcher pair look-alike scenes? Ground truth from the synthetic benchmark.

For each matcher variant (a set of ``--config.matcher.*`` overrides of
configs/synthetic.py) this trains the matcher with ``sembridge-jax train-matcher`` (or
reuses ``ROOT/<variant>`` if it holds a trained one) and measures, with the generator's
scene descriptors (`sembridge_jax.data.synthetic.scene_descriptor`, chromaticity of the
scene's mean true-colour reflectance, taken relative to its region's class mean; see
`sembridge_jax.analysis.synthetic_ground_truth.synthetic_match_quality`):

* ``val loss``: the best validation loss of the matcher;
* ``own top-1``: how often the RGB view of an MS train image (its rendering) is nearest to
  that same MS image among all MS train images (chance 1/N);
* ``MS->MS``: mean relative-descriptor distance between each rendering's nearest *other*
  same-class MS image and that image -- whether the matcher learned scene similarity in
  the domain it was trained on;
* ``RGB->MS``: the same for the real RGB train images and their SFM teachers (what the
  ``match`` stage does) -- whether that similarity survives the camera gap;
* ``centred``: ``RGB->MS`` with ``matching.centre_embeddings`` (cosine of class-centred
  embeddings, `sembridge_jax.matching.centre_per_class`), and its distinct teachers;
* ``colour R2 MS / RGB``: how much of the relative scene colour a linear read-out of the
  class-centred embeddings recovers (ridge regression, fitted on one half of the split and
  scored on the other, R^2) for the MS images and for the real RGB images: whether the
  information SFM should match on is in the embedding at all;
* ``teachers``: distinct teachers chosen for the RGB images.

Random same-class pairs give the reference distances (printed in the header).

  python bench/matcher_quality.py --root /tmp/matchers [--variants default infonce_flips_60]
      [--data-dir DIR]   # a built synthetic TFDS dir to share between variants
      [--scene-variation 0]   # the data of dataset version 1.0.0 (docs/matcher_study.md (dataset 1.0.0 table))
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import synthetic as synthetic_config  # noqa: E402

VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "infonce_20": {"soft_target_weight": 0.0, "epochs": 20},
    "infonce_flips_60": {"soft_target_weight": 0.0, "epochs": 60, "augment_rendering": True,
                         "rendering_colour_jitter": 0.0, "plateau_patience": 8},
    "infonce_flips_gamma_60": {"soft_target_weight": 0.0, "epochs": 60,
                               "augment_rendering": True, "rendering_colour_jitter": 0.0,
                               "plateau_patience": 8, "rendering_gamma": 2.2},
    "infonce_flips_gamma_jitter_60": {"soft_target_weight": 0.0, "epochs": 60,
                                      "augment_rendering": True, "rendering_colour_jitter": 0.1,
                                      "plateau_patience": 8, "rendering_gamma": 2.2},
    "infonce_camera_60": {"soft_target_weight": 0.0, "epochs": 60, "augment_rendering": True,
                          "rendering_colour_jitter": 0.0, "plateau_patience": 8,
                          "rendering_random_camera": True, "rendering_gamma": 2.2},
    "resnet34_infonce_flips_10": {"soft_target_weight": 0.0, "epochs": 10,
                                  "augment_rendering": True, "rendering_colour_jitter": 0.0,
                                  "model": "resnet34"},
}


def overrides_of(variant: str, data_dir: str | None,
                 scene_variation: float | None = None) -> dict[str, object]:
  flat = {("model.matcher" if k == "model" else f"matcher.{k}"): v
          for k, v in VARIANTS[variant].items()}
  flat["progress"] = False
  if data_dir:
    flat["data.data_dir"] = data_dir
  if scene_variation is not None:
    flat["data.synthetic.scene_variation"] = scene_variation
  return flat


def train(variant: str, workdir: pathlib.Path, overrides: dict[str, object]) -> None:
  if (workdir / "matcher" / "checkpoints").exists():
    print(f"[{variant}] reusing the matcher in {workdir}", flush=True)
    return
  command = [sys.executable, "-m", "sembridge_jax.main", "train-matcher", "--config",
             str(REPO / "configs" / "synthetic.py"), "--workdir", str(workdir)]
  command += [f"--config.{k}={v}" for k, v in overrides.items()]
  print(f"[{variant}] training: {' '.join(command[3:])}", flush=True)
  subprocess.run(command, check=True, cwd=str(REPO))


def relative_descriptors(table: dict, benchmark, split: str, ids: np.ndarray) -> np.ndarray:
  """Scene descriptors of ``split`` relative to their class mean, in the order of ``ids``."""
  from sembridge_jax import matching
  desc = matching.centre_per_class(np.stack([table[n] for n in benchmark.filenames(split)]),
                                   benchmark.labels(split))
  return np.asarray(desc)[benchmark.index_of(split, ids)]


def probe_r2(features: np.ndarray, targets: np.ndarray, ridge: float = 10.0) -> float:
  """Held-out R^2 of a ridge regression ``targets ~ features`` (fit on a random half)."""
  order = np.random.default_rng(0).permutation(len(features))
  fit, held_out = order[: len(order) // 2], order[len(order) // 2:]
  x, y = features.astype(np.float64), targets.astype(np.float64)
  weights = np.linalg.solve(x[fit].T @ x[fit] + ridge * np.eye(x.shape[1]), x[fit].T @ y[fit])
  residual = y[held_out] - x[held_out] @ weights
  return float(1.0 - np.sum(residual ** 2) / np.sum((y[held_out] - y[held_out].mean(0)) ** 2))


def measure(variant: str, workdir: pathlib.Path, overrides: dict[str, object]) -> dict:
  import json

  from sembridge_jax import config_base, data as data_lib, matching, sharding, stages
  from sembridge_jax.analysis.synthetic_ground_truth import synthetic_match_quality
  from sembridge_jax.data import synthetic
  from sembridge_jax.train import inference, matcher

  config = synthetic_config.get_config()
  config.update_from_flattened_dict(overrides)
  config = config_base.validate_config(config)
  benchmark = stages.load_benchmark(config, workdir)
  ms, rgb = matcher.embed_splits(config, stages.as_workdir(workdir).matcher, benchmark)
  modeldef, state = matcher.load_best_matcher(config, stages.as_workdir(workdir).matcher, benchmark)
  mesh = sharding.make_mesh()
  embed_rgb = inference.make_predict_fn(modeldef, lambda m, x: {"embedding": m.embed_rgb(x)}, mesh)
  renderings = inference.predict_split(
      embed_rgb, state.params, state.model_state, benchmark, "ms_train",
      batch_size=config.eval_batch_size, normalization=config.data.normalization, mesh=mesh,
      loader_kwargs={"with_rgb_rendering": True,
                     "rendering_gamma": config.matcher.rendering_gamma},
      image_key="rgb_rendering")
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  ms_emb, render_emb = unit(ms.outputs["embedding"]), unit(renderings.outputs["embedding"])
  similarity = render_emb @ ms_emb.T
  own_top1 = float(np.mean(similarity.argmax(axis=1) == np.arange(len(similarity))))

  table = synthetic.scene_descriptors(data_lib.synthetic_parameters(config.data))
  ms_desc = relative_descriptors(table, benchmark, "ms_train", ms.ids)
  same_class = ms.labels[:, None] == ms.labels[None, :]
  np.fill_diagonal(same_class, False)
  nearest_other = np.where(same_class, similarity, -np.inf).argmax(axis=1)
  rng = np.random.default_rng(0)
  random_other = np.array([rng.choice(np.flatnonzero(row)) for row in same_class])
  ms_distance = lambda partner: float(np.linalg.norm(ms_desc - ms_desc[partner], axis=1).mean())

  rows = np.asarray(matching.nearest_teacher(rgb.outputs["embedding"], ms.outputs["embedding"],
                                             rgb.labels, ms.labels, k=1))[:, 0]
  from sembridge_jax.distill.distiller import random_same_class_pairs
  random_rows = random_same_class_pairs(rgb.labels, ms.labels, config.seed)
  quality = synthetic_match_quality(config, benchmark, rgb.ids, ms.ids[rows],
                                           ms.ids[random_rows])
  centred_rgb = np.asarray(matching.centre_per_class(rgb.outputs["embedding"], rgb.labels))
  centred_ms = np.asarray(matching.centre_per_class(ms.outputs["embedding"], ms.labels))
  centred_rows = np.asarray(matching.nearest_teacher(centred_rgb, centred_ms, rgb.labels,
                                                     ms.labels, k=1))[:, 0]
  centred = synthetic_match_quality(config, benchmark, rgb.ids, ms.ids[centred_rows],
                                           ms.ids[random_rows])
  rgb_desc = relative_descriptors(table, benchmark, "rgb_train", rgb.ids)
  history = [json.loads(line) for line in (workdir / "matcher" / "metrics.jsonl").read_text()
             .splitlines()]
  return {"variant": variant, "epochs": config.matcher.epochs,
          "val_loss": min(r["eval/val_loss"] for r in history if "eval/val_loss" in r),
          "own_top1": own_top1, "ms_to_ms": ms_distance(nearest_other),
          "ms_to_ms_random": ms_distance(random_other),
          "rgb_to_ms": quality["matched_relative_feature_distance"],
          "rgb_to_ms_random": quality["random_relative_feature_distance"],
          "rgb_to_ms_centred": centred["matched_relative_feature_distance"],
          "teachers_centred": len(np.unique(centred_rows)),
          "colour_r2_ms": probe_r2(centred_ms, ms_desc),
          "colour_r2_rgb": probe_r2(centred_rgb, rgb_desc),
          "teachers": len(np.unique(rows)), "num_teachers": len(ms.ids)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, help="one workdir per variant under ROOT")
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--scene-variation", type=float, default=None,
                      help="the synthetic data's scene condition (0: dataset version 1.0.0)")
  args = parser.parse_args()
  results = []
  for variant in args.variants:
    workdir = pathlib.Path(args.root) / variant
    overrides = overrides_of(variant, args.data_dir, args.scene_variation)
    train(variant, workdir, overrides)
    results.append(measure(variant, workdir, overrides))
  first = results[0]
  print(f"\nRelative scene-colour distance, lower is better; random same-class pairs: MS->MS "
        f"{first['ms_to_ms_random']:.4f}, RGB->MS {first['rgb_to_ms_random']:.4f}; "
        f"own top-1 chance {1 / first['num_teachers']:.2%}\n")
  print("| matcher variant | overrides | epochs | val loss | own top-1 | MS->MS | RGB->MS "
        "| teachers used | RGB->MS centred | teachers used | colour R2 MS / RGB |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in results:
    shown = ", ".join(f"{k}={v}" for k, v in VARIANTS[r["variant"]].items()) or "(none)"
    print(f"| {r['variant']} | {shown} | {r['epochs']} | {r['val_loss']:.3f} "
          f"| {r['own_top1']:.1%} | {r['ms_to_ms']:.4f} | {r['rgb_to_ms']:.4f} "
          f"| {r['teachers']}/{r['num_teachers']} | {r['rgb_to_ms_centred']:.4f} "
          f"| {r['teachers_centred']} | {r['colour_r2_ms']:.2f} / {r['colour_r2_rgb']:.2f} |")


if __name__ == "__main__":
  main()
