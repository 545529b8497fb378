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
# default crop_scale null), the scale generation runs at; every crop sees a part of the eye. Training pairs are
# registered (the SLO and the late FA onto the early FA, RegisterUWF, cached in <bundle_root>/work/registration);
# a pair it cannot align is left out with a named line (on the shared samples all 14 pairs register).
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

# The recipe (registered pairs, 128 x 128 crops, per-stage epochs, learning rates and batch sizes, sampling per
# method) is the overlay configs/recipes/real.json, last in every command's config list; run from bundle/, each
# printed command can be pasted into a shell. REAL_OVERLAY: an extra config for every training stage, just before
# the recipe (e.g. configs/gpu.json: device cache, ThreadDataLoader, bf16, epochs of iterations_per_epoch draws).
# As command-line overrides (they win over the configs), passed only when set: REAL_EPOCHS_1 ... _4,
# REAL_EPOCHS_PRIOR, REAL_EPOCHS_RESIDUAL (the stage's epochs, validated once at the end), REAL_BATCH (stages 3-4,
# prior, residual), REAL_CPU_CONTROLNET_LR_MULT (the ControlNet's learning-rate multiplier, stages 3-4; the recipe
# has one rate: x6 collapsed on the real frames, bundle/docs/README.md "Real frames on the CPU"; 3 is the quick
# start's)
OVERLAYS=(${REAL_OVERLAY:+"$REAL_OVERLAY"} configs/recipes/real.json)
COMMON=(--meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root "$BUNDLE_ROOT")
TRAIN=("${COMMON[@]}" --dataset_dir "$REAL_DATA")
EVAL=("${COMMON[@]}" --dataset_dir "$REAL_DATA/val" --train_dir "$REAL_DATA/train")
BATCH=(${REAL_BATCH:+--train_batch_size "$REAL_BATCH"})
LR_MULT=(${REAL_CPU_CONTROLNET_LR_MULT:+--lr_multipliers "{'controlnet': $REAL_CPU_CONTROLNET_LR_MULT}"})
E1=(${REAL_EPOCHS_1:+--max_epochs "$REAL_EPOCHS_1" --val_interval "$REAL_EPOCHS_1"})
E2=(${REAL_EPOCHS_2:+--max_epochs "$REAL_EPOCHS_2" --val_interval "$REAL_EPOCHS_2"})
E3=(${REAL_EPOCHS_3:+--max_epochs "$REAL_EPOCHS_3" --val_interval "$REAL_EPOCHS_3"})
E4=(${REAL_EPOCHS_4:+--max_epochs "$REAL_EPOCHS_4" --val_interval "$REAL_EPOCHS_4"})
EP=(${REAL_EPOCHS_PRIOR:+--max_epochs "$REAL_EPOCHS_PRIOR" --val_interval "$REAL_EPOCHS_PRIOR"})
ER=(${REAL_EPOCHS_RESIDUAL:+--max_epochs "$REAL_EPOCHS_RESIDUAL" --val_interval "$REAL_EPOCHS_RESIDUAL"})

cd "$BUNDLE_DIR"
DRY_RUN="${REAL_CPU_DRY_RUN:-}"
# shellcheck source=bundle_step.sh
source "$BUNDLE_DIR/scripts/bundle_step.sh"

start_all=$SECONDS
# REAL_METHOD=residual: the supervised prior and diffusion on its residual (pixel space, no autoencoder stages)
# instead of the four latent stages; the prior alone is scored too (--method prior: models/model_prior.pt, fast
# mode, into eval/report_prior)
if [[ "${REAL_METHOD:-latent}" == "residual" ]]; then
    step "[1/4] supervised prior (BasicUNet, SLO -> late, L1)" training \
        --config_file "$(configs common.json train_prior.json "${OVERLAYS[@]}")" "${TRAIN[@]}" "${EP[@]}" "${BATCH[@]}" "$@"
    step "[2/4] diffusion on the prior's residual (pixel space)" training \
        --config_file "$(configs common.json train_residual.json "${OVERLAYS[@]}")" "${TRAIN[@]}" "${ER[@]}" \
        "${BATCH[@]}" "$@"
    step "[3/4] score the prior alone (one forward pass) on the validation frames" \
        --config_file "$(configs inference.json evaluate.json configs/recipes/real.json)" "${EVAL[@]}" --method prior \
        --eval_dir "$BUNDLE_ROOT/eval/report_prior"
    step "[4/4] generate the validation frames at native size and score them" \
        --config_file "$(configs inference.json evaluate.json configs/recipes/real.json)" "${EVAL[@]}" --method residual
else
    step "[1/5] FA autoencoder" training \
        --config_file "$(configs common.json train_autoencoder.json "${OVERLAYS[@]}")" "${TRAIN[@]}" "${E1[@]}" "$@"
    step "[2/5] gated SLO encoder" training \
        --config_file "$(configs common.json train_autoencoder.json train_condition_encoder.json "${OVERLAYS[@]}")" \
        "${TRAIN[@]}" "${E2[@]}" "$@"
    step "[3/5] early-phase latent diffusion" training \
        --config_file "$(configs common.json train_diffusion.json "${OVERLAYS[@]}")" "${TRAIN[@]}" "${E3[@]}" \
        "${BATCH[@]}" "${LR_MULT[@]}" "$@"
    step "[4/5] late-phase fine-tuning (CTRD loss)" training \
        --config_file "$(configs common.json train_diffusion.json train_late.json "${OVERLAYS[@]}")" "${TRAIN[@]}" \
        "${E4[@]}" "${BATCH[@]}" "${LR_MULT[@]}" "$@"
    step "[5/5] generate the validation frames at native size and score them" \
        --config_file "$(configs inference.json evaluate.json configs/recipes/real.json)" "${EVAL[@]}"
fi

if [[ -n "${REAL_CPU_DRY_RUN:-}" ]]; then exit 0; fi
echo
echo "real-data run finished in $((SECONDS - start_all)) s"
echo "  model:             $BUNDLE_ROOT/models/"
echo "  evaluation report: $BUNDLE_ROOT/eval/report/ (model beside the constant and early-phase predictors)"
