#!/usr/bin/env bash
# One prepared device session: the checks of issues 28 and 31 that need a GPU, in one command.
#
# Here, first: benchmarks/gpu/wheels.sh (the packages the device image lacks, into .whl/). Then one call:
#
#     run(command="bash benchmarks/gpu/session.sh train bench", carry=[".whl"], timeout_s=590)
#
# Steps, in the order given (default: train bench):
#   train     ctp-train --recipe gpu on CUDA (its 7-minute budget; issue 28 item 4); the run's best and last
#             moving averages, its log and its checkpoint come back in $OUT/gpu/
#   bench     bench_transformer.py --device cuda: seconds for one million voxels (issue 31 item 7: <= 2 s on
#             one H100)
#   clinical  bench_clinical.py at 512 x 512 x 24 x 40, every method, the network on CUDA (issue 31 item 7);
#             not yet timed there (capped at 400 s): give it a call of its own if train took the first
# Everything printed also lands in $OUT/session.log. TINY=1 runs each step at a tiny size on the CPU (to try
# this script here, where the venv has every package: `OUT=/tmp/gpu_out TINY=1 WHEELS=0 PY=.venv/bin/python bash
# benchmarks/gpu/session.sh train bench`).
# Afterwards, here: benchmarks/gpu/README.md says how the weights are scored and shipped.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder whose files come back}
PY=${PY:-python3}
TINY=${TINY:-0}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${WHEELS:-1}" = 1 ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ctp_site .whl/*.whl \
        || { echo "session.sh: installing the carried wheels failed"; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/ctp_site"
fi
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"
git log -1 --format='commit %H %s' 2>/dev/null || true

step_train() {
    local run=/tmp/ctp_gpu_run options=(--device cuda)
    [ "$TINY" = 1 ] && options=(--device cpu --max-steps 2)
    rm -rf "$run"
    timeout 520 "$PY" -m ctp_nipype.cli.train --recipe gpu --out "$run" --no-progress "${options[@]}"
    echo "ctp-train exit status $?"
    mkdir -p "$OUT/gpu"
    for name in best_ema.safetensors last_ema.safetensors log.tsv checkpoint.safetensors; do
        [ -f "$run/$name" ] && cp "$run/$name" "$OUT/gpu/"
    done
    tail -n 3 "$run/log.tsv" 2>/dev/null | cut -f1-3,11-20
}

step_bench() {
    local options=(--device cuda)
    [ "$TINY" = 1 ] && options=(--device cpu --voxels 128 --rounds 1)
    timeout 150 "$PY" benchmarks/bench_transformer.py "${options[@]}" 2>&1 | tee "$OUT/bench_transformer.txt"
}

step_clinical() {
    local options=(--slices 24 --methods ssvd csvd osvd transformer --device cuda --nprocs 16)
    [ "$TINY" = 1 ] && { echo "clinical: no tiny size (the phantom is clinical by definition); skipped"; return; }
    timeout 400 "$PY" benchmarks/bench_clinical.py "${options[@]}" 2>&1 | tee "$OUT/bench_clinical.txt"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(train bench)
for step in "${steps[@]}"; do
    case "$step" in
        train|bench|clinical) echo "=== $step $(date -u +%T)"; "step_$step" ;;
        *) echo "session.sh: unknown step '$step' (train, bench, clinical)"; exit 2 ;;
    esac
done
echo "=== done $(date -u +%T)"
