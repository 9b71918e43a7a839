#!/usr/bin/env bash
# The prepared device check of issue #18: one command on a lent GPU, its results in $OUT.
#
#   bench/gpu/check.sh [STAGE ...]      (default: env compare_resnet compare_mobilenet)
#
# Stages, in the order given (each is cut off when the budget runs out; what it printed
# so far stays in $OUT/STAGE.log):
#   env                 nvidia-smi, Python, JAX / Flax / PyTorch versions, JAX's devices
#   compare_resnet      bench/compare_pytorch.py, ResNet-34 pair, batch 256, 64 px: JAX
#                       gallery / teacher inside against PyTorch eager, no_grad, precomputed
#                       and torch.compile, interleaved (~2-3 min with torch.compile)
#   compare_mobilenet   the same for the MobileNetV2 pair; then its gallery slowdown:
#                       bench/distill_step.py --programs, MobileNet->MobileNet beside
#                       ResNet->MobileNet at batch 64, 5 alternating rounds
#   compare_bf16        both pairs with the networks in bfloat16 (JAX model.dtype, PyTorch
#                       torch.autocast), torch.compile left out (~2 min)
#   timing              configs/synthetic_s2s_size.py: the S2S_EU-sized dataset build
#                       (~6 min on a 2-core CPU, less with more cores), the student
#                       alone, the teacher and the matcher (1 epoch each), matching,
#                       SemBridge; $OUT/phases.md:
#                       each finished run's time per phase (bench/phase_report.py)
#   bf16                the default pipeline (configs/synthetic.py, seeds 0-2) in float32
#                       and with model.dtype=bfloat16; $OUT/bf16.md: each run's OA
#                       difference with its paired interval (bench/compare_workdirs.py)
#
# Environment: OUT (default workdirs/gpu_check), BUDGET_S (seconds for all stages, default
# 540), PYTHON (default python3), SMALL=1 (tiny sizes: a dry run of every stage on a CPU),
# WHEELS=0 (do not install the wheels under .whl/, which bench/gpu/wheels.sh fetched for
# the device's Python 3.12; installed by default). bench/gpu/README.md
# says how to call it through the device tool.
set -uo pipefail
start=$SECONDS   # The budget counts everything below, the wheels' install included.
cd "$(dirname "$0")/../.."
OUT=${OUT:-workdirs/gpu_check}
BUDGET_S=${BUDGET_S:-540}
PYTHON=${PYTHON:-python3}
SMALL=${SMALL:-0}
STAGES=(env compare_resnet compare_mobilenet compare_bf16 timing bf16)
for name in ${*:-env compare_resnet compare_mobilenet}; do   # A typo costs no device time.
  [[ " ${STAGES[*]} " == *" $name "* ]] || { echo "[check] no stage '$name' (${STAGES[*]})"; exit 2; }
done
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [[ ${WHEELS:-1} == 1 ]] && compgen -G ".whl/*.whl" > /dev/null; then
  # Once per machine: a second call on the warm machine finds the marker.
  if [[ ! -f /tmp/sembridge_site/.installed ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/sembridge_site .whl/*.whl || { echo "[check] wheel install failed"; exit 1; }
    touch /tmp/sembridge_site/.installed
  fi
  export PYTHONPATH=/tmp/sembridge_site
fi
# JAX and PyTorch share the GPU in compare_*: JAX must not take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# Word lists (no value holds a space), exported to the stages' shells.
if [[ $SMALL == 1 ]]; then
  COMPARE="--batch 8 --size 32 --steps 1 --rounds 1"
  GALLERY_CHECK=$COMPARE
  TIMING="--config.data.synthetic.ms_per_class=12 --config.data.synthetic.rgb_per_class=12
          --config.data.synthetic.image_size=32 --config.teacher.batch_size=16
          --config.matcher.batch_size=16 --config.student.batch_size=16
          --config.distill.batch_size=16 --config.eval_batch_size=64
          --config.model.teacher=shufflenet_v2_x0_5 --config.model.matcher=shufflenet_v2_x0_5
          --config.model.student=shufflenet_v2_x0_5 --config.matching.rematch_epochs=(2,)
          --config.student.epochs=3 --config.distill.epochs=3"
  DEFAULT_RUN="--config.data.synthetic.ms_per_class=12 --config.data.synthetic.rgb_per_class=12
               --config.data.synthetic.extra_rgb_test_per_class=4 --config.teacher.epochs=1
               --config.matcher.epochs=1 --config.student.epochs=2 --config.distill.epochs=2
               --config.matching.rematch_epochs=(1,) --config.pipeline.seeds=(0,)
               --config.model.teacher=shufflenet_v2_x0_5"
else
  COMPARE="--batch 256 --size 64 --steps 20 --rounds 3"
  GALLERY_CHECK="--batch 64 --size 64 --steps 30 --rounds 5"
  TIMING=""
  DEFAULT_RUN=""
fi

stage_env() {
  nvidia-smi -L 2>&1 || echo "no nvidia-smi"
  "$PYTHON" - <<'PY'
import platform, jax, flax, optax
print("Python", platform.python_version(), "| JAX", jax.__version__, "| Flax", flax.__version__,
      "| Optax", optax.__version__)
print("JAX devices:", jax.devices())
try:
  import torch
  print("PyTorch", torch.__version__, "| CUDA", torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except ImportError:
  print("PyTorch: not installed")
PY
}
stage_compare_resnet() { "$PYTHON" bench/compare_pytorch.py --pairs resnet34 $COMPARE; }
stage_compare_mobilenet() {
  "$PYTHON" bench/compare_pytorch.py --pairs mobilenet_v2 $COMPARE || return
  # The 0.64x of 2026-12-04 (batch 64, 30 steps, one sequential round): MobileNet->MobileNet
  # and ResNet->MobileNet, whose gallery steps are the same program (equal hashes).
  "$PYTHON" bench/distill_step.py --pairs 1,3 --programs $GALLERY_CHECK
}
stage_compare_bf16() {
  "$PYTHON" bench/compare_pytorch.py --pairs resnet34,mobilenet_v2 --dtype bfloat16 \
    --skip-compile $COMPARE
}
TIMING_WORKDIR=/tmp/sembridge_s2s_size
DTYPE_WORKDIR=/tmp/sembridge_default
stage_bf16() {
  local dtype
  for dtype in float32 bfloat16; do   # One dataset for both (the same test images).
    "$PYTHON" -m sembridge_jax.main pipeline --config configs/synthetic.py \
      --workdir "${DTYPE_WORKDIR}_$dtype" --config.data.data_dir="${DTYPE_WORKDIR}_tfds" \
      --config.model.dtype=$dtype --config.progress=False $DEFAULT_RUN || return
  done
  "$PYTHON" bench/compare_workdirs.py "${DTYPE_WORKDIR}_float32" "${DTYPE_WORKDIR}_bfloat16" \
    | tee "$OUT/bf16.md"
}
stage_timing() {
  # The two runs the target is about, the student alone first (it needs only the data):
  # if the budget runs out, phases.md still holds it. KD with random pairs is left out.
  local command
  for command in train-student train-teacher train-matcher match distill; do
    echo "[timing] $command"
    "$PYTHON" -m sembridge_jax.main $command --config configs/synthetic_s2s_size.py \
      --workdir "$TIMING_WORKDIR" --config.progress=False $TIMING || return
  done
}

export PYTHON OUT COMPARE GALLERY_CHECK TIMING TIMING_WORKDIR DEFAULT_RUN DTYPE_WORKDIR
export -f stage_env stage_compare_resnet stage_compare_mobilenet stage_compare_bf16 stage_timing \
  stage_bf16
REPORT_S=20   # kept back for phases.md after the timing stage
for stage in "${@:-env compare_resnet compare_mobilenet}"; do
  for name in $stage; do
    left=$(( BUDGET_S - REPORT_S - (SECONDS - start) ))
    if (( left < 20 )); then
      echo "[check] $name: skipped, ${left} s of the budget left" | tee -a "$OUT/stages.log"
      continue
    fi
    echo "[check] $name: started, limit ${left} s"
    began=$SECONDS
    timeout -k 10 "$left" bash -c "stage_$name" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "[check] $name: exit $rc after $(( SECONDS - began )) s" | tee -a "$OUT/stages.log"
    tail -n 25 "$OUT/$name.log"
    if [[ $name == timing ]]; then   # The runs that finished, also when the budget cut it.
      timeout -k 5 "$REPORT_S" "$PYTHON" bench/phase_report.py "$TIMING_WORKDIR" \
        > "$OUT/phases.md" 2>&1
      cat "$OUT/phases.md"
    fi
  done
done
