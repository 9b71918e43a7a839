"""Several hosts for real: two processes on 127.0.0.1 run the tiny teacher and
distillation stages with ``--distributed`` (coordinator, process count and id from the
environment) on a fresh workdir, and the distilled student ends with the parameters of
one process that holds the same two devices (to float32 rounding: rtol 1e-5)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from conftest import REPO

# SGD: the update is linear in the gradient, so a last-bit difference in a cross-device
# reduction stays a last-bit difference (see test_train.py); the stages are what's tested.
# KD alone (no matcher, no OT compile): the multi-host machinery is the same for every loss.
OVERRIDES = ("--config.teacher.optimizer.name=sgd", "--config.distill.optimizer.name=sgd",
             "--config.distill.sembridge=False")
STAGES = (("train-teacher", OVERRIDES), ("distill", OVERRIDES))
TIMEOUT = 240


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def command(stage: str, workdir, extra) -> list[str]:
  return [sys.executable, "-m", "sembridge_jax.main", stage, "--config", "configs/tiny.py",
          "--workdir", str(workdir), "--config.progress=False", *extra]


def environment(devices: int, **variables: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  # Unoptimised XLA: these runs are compile-bound, and both sides compile alike.
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
             "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
             **variables)
  return env


def run_two_processes(stage: str, workdir, extra) -> list[subprocess.CompletedProcess]:
  port = free_port()
  procs = [subprocess.Popen(
      command(stage, workdir, (*extra, "--distributed")), cwd=str(REPO), text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=environment(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                      JAX_PROCESS_ID=str(i))) for i in range(2)]
  try:
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outs)]


def final_leaves(rundir) -> list[np.ndarray]:
  manager = ocp.CheckpointManager(rundir / "checkpoints" / "latest",
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  saved = state["state"]
  return [np.asarray(saved[k]) for k in sorted(saved)]


def test_two_processes_train_like_one_process_with_the_same_devices(tmp_path):
  multi, single = tmp_path / "two_processes", tmp_path / "one_process"
  for stage, extra in STAGES:
    results = run_two_processes(stage, multi, extra)
    for i, result in enumerate(results):
      assert result.returncode == 0, f"process {i}:\n{result.stdout}\n{result.stderr[-3000:]}"
    # Only process 0 reports; process 1 trains silently.
    assert "OA" in results[0].stdout and "OA" not in results[1].stdout, results[1].stdout
  assert (multi / "teacher" / "checkpoints" / "best").is_dir()

  # The same distillation in one process holding two devices, from the same teacher.
  shutil.copytree(multi / "teacher", single / "teacher")
  reference = subprocess.run(
      command("distill", single, (*OVERRIDES, f"--config.data.data_dir={multi / 'tfds'}")),
      cwd=str(REPO), text=True, capture_output=True, env=environment(2), timeout=TIMEOUT)
  assert reference.returncode == 0, reference.stderr[-3000:]
  rundir = "distill/kd/seed_0"
  lines = (multi / rundir / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == len(set(lines)) == len(
      (single / rundir / "metrics.jsonl").read_text().splitlines())
  a, b = final_leaves(multi / rundir), final_leaves(single / rundir)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
