#!/usr/bin/env bash
# Issue 31 in one prepared command on a lent GPU machine (the `device` tool): the CUDA tests, then every GPU benchmark,
# each step under its own time limit so that one slow step cannot eat the others' time. Run from the repository root:
#
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=600)
#
# .whl holds the wheels the GPU machine lacks: `bash benchmarks/gpu_wheels.sh` downloads them (open_clip_torch, ftfy,
# wcwidth, av and timm at the versions installed here, cp312; OpenCV for YuNet and NVML are in that machine's image).
# What comes back (at most 8 files): $OUT/results/<script>-<device>.json (merge them into benchmarks/results/ with
# `python benchmarks/_results.py merge FILES_AT/results/*.json`; make_tables.py renders them into docs/benchmarks.md),
# $OUT/tables.md and $OUT/log.txt (versions, nvidia-smi, every step's command, output and exit status). The script
# exits 1 when a step did not exit 0.
#
# DRY=1 bash benchmarks/gpu_session.sh runs the same steps on the CPU with the tiny test models (minutes), to check the
# script before GPU time is spent on it; with a Python that lacks open_clip and av on PATH, it installs the wheels of
# .whl as the GPU machine will (and compiles with an empty inductor cache, as a fresh GPU machine does); the predict
# steps run on as many frames and videos as on the GPU, since their detection runs on the CPU there too.
#
# The steps' limits add up to 460 s (530 s with each step's 10 s to die after its limit) in a call of at most 600 s.
# A second call, STEPS="train predict-many" (say: the names of the steps below) to run only those steps again after
# a fix, fits a session's 15 device minutes only when the first ends early (steps usually stop well before their
# limits): make it at once, while the machine is warm (it is handed back after 30 s idle, and none starts with under
# 4 minutes left). Its rows come back in their own files; merge them as above.
set -uo pipefail
OUT=${OUT:-/tmp/clipdfer-gpu-out}
mkdir -p "$OUT"
NAMES=(cuda-tests lstm forward-eager forward-compiled train predict predict-many)
for name in ${STEPS:-}; do  # a mistyped name would run nothing and look like success
    if [[ " ${NAMES[*]} " != *" $name "* ]]; then
        echo "STEPS names '$name', which is no step: the steps are ${NAMES[*]}" | tee -a "$OUT/log.txt" >&2
        exit 2
    fi
done
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d .whl ] && ! python3 -c "import open_clip, av" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # clipdfer from this checkout, as it is

if [ "${DRY:-0}" = 1 ]; then
    DEVICE=cpu; export CLIPDFER_TEST_DEVICE=cpu
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d); export TORCHINDUCTOR_CACHE_DIR  # cold, like the GPU machine's first call
    FWD=(dferclip_test clipdfer_test); TRAIN=(clipdfer_test dferclip_test); PRED=clip_zeroshot_test
    FWD_B=(1 2); TRAIN_B=(2 4); LSTM_B=(1 2); CUDA_TESTS=(-m "cuda and not fullsize"); RUNS=2
else
    DEVICE=cuda
    FWD=(clipdfer_vitb32_dfew dferclip_vitb32_dfew); TRAIN=(clipdfer_vitb32_dfew dferclip_vitb32_dfew
    a3lign_vitb32_dfew pmfer_vitb16_dfew); PRED=clip_zeroshot_vitb32
    # training at B = 32 only (larger batches: a later run)
    FWD_B=(1 8 32 64); TRAIN_B=(32); LSTM_B=(1 32); CUDA_TESTS=(-m cuda); RUNS=10
    nvidia-smi >> "$OUT/log.txt" 2>&1
fi
python3 -c "import torch, timm, open_clip, av, cv2, clipdfer
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'open_clip',
      open_clip.__version__, 'av', av.__version__, 'cv2', cv2.__version__, 'clipdfer', clipdfer.__version__,
      'gpu', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/log.txt"

PRED_S=30; MANY=8  # predict: 240 frames of one video (NVML samples its busy share for seconds), 8 videos of 4 s
FAILED=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, its output into $OUT/log.txt; go on whatever happens
    local name=$1 limit=$2; shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return; fi
    local start=$SECONDS
    echo "== $name: $(printf '%q ' "$@")" >> "$OUT/log.txt"  # quoted: the line runs again as it is
    timeout -k 10 "$limit" "$@" >> "$OUT/log.txt" 2>&1  # killed 10 s after the limit if it ignores SIGTERM
    local code=$?
    if [ "$code" -ne 0 ]; then FAILED=1; fi
    echo "== $name: exit $code after $((SECONDS - start)) s" | tee -a "$OUT/log.txt" >> "$OUT/steps.txt"
}

R="$OUT/results/"
mkdir -p "$R"
# a test that hangs (a collective, say) is stopped by pytest-timeout where installed (the GPU image has it), not the
# whole step; -v names each test as it ends (a step killed by its limit still shows how far it got), -rfE lists what
# failed, --durations the slowest
PYTEST_TIMEOUT=(); if python3 -c "import pytest_timeout" 2>/dev/null; then PYTEST_TIMEOUT=(--timeout=90); fi
step cuda-tests 150 python3 -m pytest -v -rfE --durations=10 -p no:cacheprovider "${PYTEST_TIMEOUT[@]}" \
    "${CUDA_TESTS[@]}" tests/test_cuda.py
step lstm 15 python3 benchmarks/bench_lstm.py --device "$DEVICE" --dtype bf16 --batch-sizes "${LSTM_B[@]}" \
    --runs "$RUNS" --save "$R"
step forward-eager 50 python3 benchmarks/bench_forward.py "${FWD[@]}" --device "$DEVICE" --dtypes bf16 fp32 \
    --batch-sizes "${FWD_B[@]}" --runs "$RUNS" --profile 8 --save "$R"
# compiled: the target's configuration only (B = 32, bf16; other sizes in a second call). Each model and batch size
# compiles anew, with a cold cache: tens of seconds each (dry runs: 59-70 s for the two tiny models on 2 CPU cores)
step forward-compiled 110 python3 benchmarks/bench_forward.py "${FWD[@]}" --device "$DEVICE" --dtypes bf16 \
    --batch-sizes "${FWD_B[2]:-${FWD_B[1]}}" --compile on --runs "$RUNS" --profile 8 --save "$R"
step train 60 python3 benchmarks/bench_train.py "${TRAIN[@]}" --device "$DEVICE" --batch-sizes "${TRAIN_B[@]}" \
    --dtypes bf16 --steps 3 --warmup 1 --save "$R"
step predict 30 python3 benchmarks/bench_predict.py --model "$PRED" --device "$DEVICE" --seconds "$PRED_S" \
    --detect-every 1 --no-iou --save "$R"
# videos/s through BatchRun with the decode/detect thread on and off (one process: the GPU is one process's)
step predict-many 45 python3 benchmarks/bench_predict.py --model "$PRED" --device "$DEVICE" --many "$MANY" \
    --seconds 4 --processes 1 --save "$R"
shopt -s nullglob
saved=("$R"*.json)
if [ ${#saved[@]} -gt 0 ]; then
    python3 benchmarks/make_tables.py --results "${saved[@]}" > "$OUT/tables.md" 2>> "$OUT/log.txt" || FAILED=1
else
    echo "no step saved a results file" | tee -a "$OUT/log.txt"
fi
cat "$OUT/steps.txt" 2>/dev/null; rm -f "$OUT/steps.txt"
exit "$FAILED"
