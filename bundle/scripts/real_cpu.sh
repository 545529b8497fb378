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
# pairs it cannot align are left out with a named line (on the shared samples all 14 pairs register)
TRAIN=("${COMMON[@]}" --dataset_dir "$REAL_DATA" --register "['late','slo']" --preset small --image_size "[128,128]"
    --log_interval 50)
# REAL_OVERLAY: an extra config for every training stage (e.g. configs/gpu.json: device cache, ThreadDataLoader,
# bf16, epochs of iterations_per_epoch draws); REAL_EPOCHS_1..4 / REAL_EPOCHS_PRIOR / REAL_EPOCHS_RESIDUAL and
# REAL_BATCH (stages 3-4, prior, residual) override the schedule (defaults: the CPU schedule below)
OVERLAY=""
if [[ -n "${REAL_OVERLAY:-}" ]]; then OVERLAY=",'$REAL_OVERLAY'"; fi
BATCH=(--train_batch_size "${REAL_BATCH:-4}")
STAGE1=(--max_epochs "${REAL_EPOCHS_1:-300}" --val_interval "${REAL_EPOCHS_1:-300}" --lr 5e-4)
STAGE2=(--max_epochs "${REAL_EPOCHS_2:-150}" --val_interval "${REAL_EPOCHS_2:-150}" --lr 5e-4 --adversarial_warmup_epochs 10)
# one learning rate: the ControlNet at x6 collapsed on the real frames (every eye the same picture,
# bundle/docs/README.md "Real frames on the CPU"); REAL_CPU_CONTROLNET_LR_MULT=3 tries the quick start's multiplier
LR_MULT=()
if [[ -n "${REAL_CPU_CONTROLNET_LR_MULT:-}" ]]; then
    LR_MULT=(--lr_multipliers "{'controlnet': $REAL_CPU_CONTROLNET_LR_MULT}")
fi
STAGE3=(--max_epochs "${REAL_EPOCHS_3:-2000}" --val_interval "${REAL_EPOCHS_3:-2000}" --lr 1e-3 --lr_warmup_iterations 50
    "${BATCH[@]}" "${LR_MULT[@]}")
STAGE4=(--max_epochs "${REAL_EPOCHS_4:-600}" --val_interval "${REAL_EPOCHS_4:-600}" --lr 5e-4 "${BATCH[@]}" "${LR_MULT[@]}")
PRIOR=(--max_epochs "${REAL_EPOCHS_PRIOR:-800}" --val_interval "${REAL_EPOCHS_PRIOR:-800}" --train_batch_size "${REAL_BATCH:-8}")
RESIDUAL=(--max_epochs "${REAL_EPOCHS_RESIDUAL:-600}" --val_interval "${REAL_EPOCHS_RESIDUAL:-600}" "${BATCH[@]}")
EVAL=("${COMMON[@]}" --dataset_dir "$REAL_DATA/val" --train_dir "$REAL_DATA/train" --fid False
    --num_inference_steps 25)

cd "$BUNDLE_DIR"
DRY_RUN="${REAL_CPU_DRY_RUN:-}"
# shellcheck source=bundle_step.sh
source "$BUNDLE_DIR/scripts/bundle_step.sh"

start_all=$SECONDS
# REAL_METHOD=residual: the supervised prior and diffusion on its residual (pixel space, no autoencoder stages)
# instead of the four latent stages; the prior alone is scored too (models/model_prior.pt, fast mode)
if [[ "${REAL_METHOD:-latent}" == "residual" ]]; then
    step "[1/4] supervised prior (BasicUNet, SLO -> late, L1)" training \
        --config_file "['configs/common.json','configs/train_prior.json'$OVERLAY]" "${TRAIN[@]}" "${PRIOR[@]}" "$@"
    step "[2/4] diffusion on the prior's residual (pixel space)" training \
        --config_file "['configs/common.json','configs/train_residual.json'$OVERLAY]" "${TRAIN[@]}" "${RESIDUAL[@]}" "$@"
    step "[3/4] score the prior alone (one forward pass) on the validation frames" \
        --config_file "['configs/inference.json','configs/evaluate.json']" "${EVAL[@]}" \
        --model_path "$BUNDLE_ROOT/models/model_prior.pt" --eval_dir "$BUNDLE_ROOT/eval/report_prior"
    step "[4/4] generate the validation frames at native size and score them" \
        --config_file "['configs/inference.json','configs/evaluate.json']" "${EVAL[@]}" \
        --model_path "$BUNDLE_ROOT/models/model_residual.pt" --num_inference_steps 10
else
    step "[1/5] FA autoencoder" training \
        --config_file "['configs/common.json','configs/train_autoencoder.json'$OVERLAY]" "${TRAIN[@]}" "${STAGE1[@]}" "$@"
    step "[2/5] gated SLO encoder" training \
        --config_file "['configs/common.json','configs/train_autoencoder.json','configs/train_condition_encoder.json'$OVERLAY]" \
        "${TRAIN[@]}" "${STAGE2[@]}" "$@"
    step "[3/5] early-phase latent diffusion" training \
        --config_file "['configs/common.json','configs/train_diffusion.json'$OVERLAY]" "${TRAIN[@]}" "${STAGE3[@]}" "$@"
    step "[4/5] late-phase fine-tuning (CTRD loss)" training \
        --config_file "['configs/common.json','configs/train_diffusion.json','configs/train_late.json'$OVERLAY]" \
        "${TRAIN[@]}" "${STAGE4[@]}" "$@"
    step "[5/5] generate the validation frames at native size and score them" \
        --config_file "['configs/inference.json','configs/evaluate.json']" "${EVAL[@]}"
fi

if [[ -n "${REAL_CPU_DRY_RUN:-}" ]]; then exit 0; fi
echo
echo "real-data run finished in $((SECONDS - start_all)) s"
echo "  model:             $BUNDLE_ROOT/models/"
echo "  evaluation report: $BUNDLE_ROOT/eval/report/ (model beside the constant and early-phase predictors)"
