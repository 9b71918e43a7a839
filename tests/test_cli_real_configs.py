"""The paper's three configs, end to end through the CLI on files laid out like the real
benchmark (written here): build the TFDS dataset, load it, train a teacher one epoch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from sembridge_jax.data import fixtures


@pytest.mark.parametrize("name", ["s2s_eu", "s2s_cn", "m2s_gl"])
def test_real_config_trains_a_teacher_for_one_epoch(name, tmp_path):
  manual_dir = tmp_path / "downloads"
  fixtures.write_fake_root(manual_dir, name, files_per_class=5)
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "sembridge_jax.main", "train-teacher",
       "--config", f"configs/{name}.py", "--workdir", str(workdir),
       f"--config.data.manual_dir={manual_dir}", "--config.teacher.epochs=1",
       "--config.teacher.batch_size=8", "--config.eval_batch_size=8",
       "--config.model.teacher=shufflenet_v2_x0_5", "--config.progress=False"],
      capture_output=True, text=True, cwd=str(REPO), timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((workdir / "teacher" / "test_metrics.json").read_text())
  assert len(metrics["confusion"]) == len(metrics["class_names"])
  assert sum(map(sum, metrics["confusion"])) > 0
  assert (workdir / "tfds" / "ackd_benchmark").is_dir()
