#!/usr/bin/env bash
# Train the `small` preset through the four stages on the authors' seven real samples (train/ 1-4; val/ 7, 8, 10
# held out), then generate the validation frames at their native 853 x 682 size and score them beside the
# constant-image and early-phase predictors (eval report: <bundle_root>/eval/report/).
#
#   bash bundle/scripts/real_cpu.sh                         # writes into runs/real_cpu/ (git-ignored)
#   BUNDLE_ROOT=/tmp/real bash bundle/scripts/real_cpu.sh
#   REAL_DATA=/path/to/uwf-samples bash bundle/scripts/real_cpu.sh
#   bash bundle/scripts/real_cpu.sh --seed 1                # extra overrides go to every training stage
#   REAL_CPU_DRY_RUN=1 bash bundle/scripts/real_cpu.sh      # print the commands only
#
# Measured (2026-12-01, 2-core machine, one PyTorch thread at high priority beside other work): 2117 s in all -
# stages 296 / 136 / 1182 / 382 s, generation + scoring of the 3 frames of 853 x 682 121 s. Scores and what they
# mean: bundle/docs/README.md, "Real frames on the CPU". Training crops 128 x 128 at the native resolution (the
# default crop_scale null), the scale generation runs at; every crop sees a part of the eye.
set -euo pipefail

BUNDLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$BUNDLE_DIR/.." && pwd)"
BUNDLE_ROOT="${BUNDLE_ROOT:-$REPO_DIR/runs/real_cpu}"
REAL_DATA="${REAL_DATA:-$REPO_DIR/../shared/uwf-samples}"
PYTHON="${PYTHON:-python}"
if [[ ! -d "$REAL_DATA/train" || ! -d "$REAL_DATA/val" ]]; then
    echo "error: no real samples in '$REAL_DATA' (train/ and val/ expected); set REAL_DATA=/path/to/uwf-samples" >&2
    exit 1
fi
mkdir -p "$BUNDLE_ROOT"
BUNDLE_ROOT="$(cd "$BUNDLE_ROOT" && pwd)"
REAL_DATA="$(cd "$REAL_DATA" && pwd)"

COMMON=(--meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root "$BUNDLE_ROOT")
# registered pairs: the SLO and the late FA onto the early FA (RegisterUWF, cached in <bundle_root>/work/registration);
# pairs it cannot align are left out with a named line (on the shared samples the SLOs of train/1 and train/4)
TRAIN=("${COMMON[@]}" --dataset_dir "$REAL_DATA" --register "['late','slo']" --preset small --image_size "[128,128]"
    --log_interval 50)
STAGE1=(--max_epochs 300 --val_interval 300 --lr 5e-4)
STAGE2=(--max_epochs 150 --val_interval 150 --lr 5e-4 --adversarial_warmup_epochs 10)
# one learning rate: the ControlNet at x6 collapsed on the real frames (every eye the same picture,
# bundle/docs/README.md "Real frames on the CPU"); REAL_CPU_CONTROLNET_LR_MULT=3 tries the quick start's multiplier
LR_MULT=()
if [[ -n "${REAL_CPU_CONTROLNET_LR_MULT:-}" ]]; then
    LR_MULT=(--lr_multipliers "{'controlnet': $REAL_CPU_CONTROLNET_LR_MULT}")
fi
STAGE3=(--max_epochs 2000 --val_interval 1000 --lr 1e-3 --lr_warmup_iterations 50 --train_batch_size 4 "${LR_MULT[@]}")
STAGE4=(--max_epochs 600 --val_interval 600 --lr 5e-4 --train_batch_size 4 "${LR_MULT[@]}")
EVAL=("${COMMON[@]}" --dataset_dir "$REAL_DATA/val" --train_dir "$REAL_DATA/train" --fid False
    --num_inference_steps 25)

cd "$BUNDLE_DIR"
DRY_RUN="${REAL_CPU_DRY_RUN:-}"
# shellcheck source=bundle_step.sh
source "$BUNDLE_DIR/scripts/bundle_step.sh"

start_all=$SECONDS
step "[1/5] FA autoencoder" training \
    --config_file "['configs/common.json','configs/train_autoencoder.json']" "${TRAIN[@]}" "${STAGE1[@]}" "$@"
step "[2/5] gated SLO encoder" training \
    --config_file "['configs/common.json','configs/train_autoencoder.json','configs/train_condition_encoder.json']" \
    "${TRAIN[@]}" "${STAGE2[@]}" "$@"
step "[3/5] early-phase latent diffusion" training \
    --config_file "['configs/common.json','configs/train_diffusion.json']" "${TRAIN[@]}" "${STAGE3[@]}" "$@"
step "[4/5] late-phase fine-tuning (CTRD loss)" training \
    --config_file "['configs/common.json','configs/train_diffusion.json','configs/train_late.json']" \
    "${TRAIN[@]}" "${STAGE4[@]}" "$@"
step "[5/5] generate the validation frames at native size and score them" \
    --config_file "['configs/inference.json','configs/evaluate.json']" "${EVAL[@]}"

if [[ -n "${REAL_CPU_DRY_RUN:-}" ]]; then exit 0; fi
echo
echo "real-data CPU run finished in $((SECONDS - start_all)) s"
echo "  model:             $BUNDLE_ROOT/models/model.pt"
echo "  evaluation report: $BUNDLE_ROOT/eval/report/ (model beside the constant and early-phase predictors)"
