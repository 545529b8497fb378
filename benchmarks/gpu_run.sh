#!/usr/bin/env bash
# The prepared GPU check of issue 19, for one call of the device tool (run from the repository root there):
#
#   bash benchmarks/gpu_run.sh        with carry [".whl", ".bench_data"] and timeout_s 480
#
# .whl: the pure-Python wheels missing from the device image (monai 1.6.1, pytorch-ignite 0.5.5), fetched here with
#   python -m pip download --no-deps --only-binary=:all: -d .whl monai==1.6.1 pytorch-ignite==0.5.5
# .bench_data/uwf-samples/{train,val}: a copy of ../shared/uwf-samples (the 21 images; phantoms when absent).
# Both folders are git-ignored (.git/info/exclude). The package is used from the working tree (PYTHONPATH), not
# installed. Writes $OUT/log.txt, rows.jsonl, table.md, env.json; BUDGET (s) bounds the benchmark (default 380).
set -u
OUT="${OUT:-bench_out}"
mkdir -p "$OUT"
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,utilization.gpu --format=csv > "$OUT/log.txt" 2>&1
DATA=()
if [[ -d .bench_data/uwf-samples/train ]]; then DATA=(--data_dir .bench_data/uwf-samples); fi
timeout $((${BUDGET:-380} + 90)) python3 benchmarks/bench_gpu.py --device cuda --out "$OUT" --budget_s "${BUDGET:-380}" \
    "${DATA[@]}" "$@" 2>&1 | tee -a "$OUT/log.txt"
echo "exit: ${PIPESTATUS[0]}"
