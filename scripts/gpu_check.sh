#!/usr/bin/env bash
# GPU verification for tune_tl, in one run of at most ~8 minutes on one GPU (more GPUs: also a 2-worker
# NCCL search). Run from anywhere; output goes to the terminal and to gpu_check.log (paste it into
# docs/benchmarks.md). Needs the project installed (pip install -e .[test]) and nothing from the network.
#   scripts/gpu_check.sh                 # PYTHON=/path/to/python scripts/gpu_check.sh for another interpreter
# Steps (each with its own time limit; a failing step is reported and the next one still runs):
#   1. the CUDA tests: tests/test_train_gpu.py (AMP, channels_last, GPU-resident data) and, with 2+ GPUs,
#      the data-parallel tests (tests/test_distributed.py, NCCL)
#   2. small real searches with --gpus-per-trial 0.5 and 1 (AMP is on by itself on CUDA), checked from Parquet
#   3. with 2+ GPUs: --gpus-per-trial 2 (two NCCL workers per trial); with fewer: it must fail at once, exit 2
#   4. python -m tune_tl.bench gpu
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LOG=${LOG:-gpu_check.log}
WORK=$(mktemp -d /tmp/tune_tl-gpu-check.XXXXXX)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()
exec > >(tee "$LOG") 2>&1

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo; echo "=== $name (limit ${limit}s) ==="
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s ==="
    [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
    return $rc
}

date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
$PY -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported(), 'ray', ray.__version__)"
[ "$GPUS" -ge 1 ] || { echo "no CUDA GPU visible: nothing to verify"; exit 1; }

TESTS=(tests/test_train_gpu.py)
[ "$GPUS" -ge 2 ] && TESTS+=(tests/test_distributed.py)
step "CUDA tests" 150 $PY -m pytest -q -rs "${TESTS[@]}"

cat > "$WORK/space.yaml" <<'YAML'
seed: 0
data: {source: digits, val_fraction: 0.2}
backbone: {name: efficientnet_lite0, weights: imagenet}
budget: {samples: 4, max_epochs: 2, grace_period: 1, reduction_factor: 2}
params:
  resolution: 64
  batch_size: 128
  freeze_policy: [prefix, full]
  freeze_blocks: {low: 0, high: all}
  lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  aug_flip: [0, 1]
  aug_crop_scale: 0.6
YAML

check() {  # check NAME: every trial ended, none errored, epochs recorded, on which GPU share
    $PY - "$WORK/out/$1" <<'PYCODE'
import sys, pandas as pd
trials, epochs = pd.read_parquet(sys.argv[1] + "/trials"), pd.read_parquet(sys.argv[1] + "/epochs")
print(trials[["trial_id", "status", "best_val_acc", "epochs_run", "wall_seconds", "workers"]].to_string(index=False))
print("epoch_seconds: median", round(epochs["epoch_seconds"].median(), 2), "max", round(epochs["epoch_seconds"].max(), 2))
bad = trials[~trials["status"].isin(["completed", "pruned"])]
assert bad.empty, f"trials that did not finish: {bad[['trial_id', 'status', 'error']].to_dict('records')}"
assert len(epochs) == trials["epochs_run"].sum()
PYCODE
}

for share in 0.5 1; do
    name="gpu-$share"
    step "search --gpus-per-trial $share" 100 $PY -m tune_tl.cli search "$WORK/space.yaml" --gpus-per-trial "$share" \
        --output "$WORK/out" --name "$name" && step "check $name" 30 check "$name"
done

if [ "$GPUS" -ge 2 ]; then
    step "search --gpus-per-trial 2 (2 NCCL workers per trial)" 120 $PY -m tune_tl.cli search "$WORK/space.yaml" \
        --samples 2 --gpus-per-trial 2 --output "$WORK/out" --name gpu-2 && step "check gpu-2" 30 check gpu-2
else
    echo; echo "=== --gpus-per-trial 2 on $GPUS GPU: must fail at once with exit 2 ==="
    start=$SECONDS
    timeout 60 $PY -m tune_tl.cli search "$WORK/space.yaml" --gpus-per-trial 2 --output "$WORK/out" --name gpu-2
    rc=$?
    echo "=== exit $rc after $((SECONDS - start)) s ==="
    [ "$rc" -eq 2 ] || failed+=("--gpus-per-trial 2 on one GPU (exit $rc, expected 2)")
fi

step "python -m tune_tl.bench gpu" 200 $PY -m tune_tl.bench gpu

echo; date -u
rm -rf "$WORK"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all GPU checks passed"
