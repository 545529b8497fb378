#!/usr/bin/env bash
# Main job of the LPUWF bundle: on synthetic phantoms, train the supervised prior (MONAI BasicUNet, SLO -> late) and
# a pixel-space diffusion model on its residual, then generate late-phase FA for the held-out phantoms and score
# them beside the constant-image and early-phase predictors. About 10 minutes on a 2-core CPU; progress bars and
# losses are printed as it goes, TensorBoard logs go to <bundle_root>/eval/<stage>.
#
#   bash bundle/scripts/quickstart.sh                  # writes into bundle/ (models/, eval/, work/)
#   BUNDLE_ROOT=/tmp/lpuwf bash bundle/scripts/quickstart.sh
#   bash bundle/scripts/quickstart.sh --seed 1                 # extra overrides go to every training stage
#                                  (--seed: training noise; --data_seed: the phantoms and their split)
#   QUICKSTART_METHOD=latent bash bundle/scripts/quickstart.sh # the paper's method: the four latent stages
#   QUICKSTART_DRY_RUN=1 bash bundle/scripts/quickstart.sh     # print the commands only
#
# Each step is one plain `python -m monai.bundle run` command (the same commands as in bundle/docs/README.md),
# printed before it runs; run from bundle/, any of them can be pasted into a shell. The recipe (64 phantoms of
# 64 x 64, per-stage epochs, learning rates and batch sizes, sampling and scoring settings) is the overlay
# configs/recipes/cpu.json, last in every command's config list. The variables below change one setting each, as
# a command-line override (it wins over the configs) passed only when set: QUICKSTART_SIZE (phantoms and training
# size), QUICKSTART_EPOCHS_PRIOR / _RESIDUAL (and _1 ... _4 for the latent stages), QUICKSTART_STEPS (sampling
# steps), QUICKSTART_CONDITIONING_SCALE (latent: control strength, sampled at and recorded in the model file by
# stage 4), QUICKSTART_CONTROLNET_LR_MULT (latent: the ControlNet's learning-rate multiplier, stages 3-4). PyTorch
# threads: the project's default (monai_lpuwf.threads: half the CPUs, 1 on 2 cores); OMP_NUM_THREADS=N or
# --num_threads N. The generated images end up in <bundle_root>/work/output/*_late.png.
set -euo pipefail

BUNDLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE_ROOT="${BUNDLE_ROOT:-$BUNDLE_DIR}"
mkdir -p "$BUNDLE_ROOT"
BUNDLE_ROOT="$(cd "$BUNDLE_ROOT" && pwd)"
PYTHON="${PYTHON:-python}"
RECIPE=configs/recipes/cpu.json
S="${QUICKSTART_SIZE:-}"
COMMON=(--meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root "$BUNDLE_ROOT"
    ${S:+--phantom_size "[$S,$S]"})
TRAIN=("${COMMON[@]}" ${S:+--image_size "[$S,$S]"})
LR_MULT=(${QUICKSTART_CONTROLNET_LR_MULT:+--lr_multipliers "{'controlnet': $QUICKSTART_CONTROLNET_LR_MULT}"})
CS="${QUICKSTART_CONDITIONING_SCALE:-}"
INFER=("${COMMON[@]}" ${QUICKSTART_STEPS:+--num_inference_steps "$QUICKSTART_STEPS"} ${CS:+--conditioning_scale "$CS"})

cd "$BUNDLE_DIR"
DRY_RUN="${QUICKSTART_DRY_RUN:-}"
# shellcheck source=bundle_step.sh
source "$BUNDLE_DIR/scripts/bundle_step.sh"

start_all=$SECONDS
# the default method: the supervised prior (train_prior.json) and diffusion on its residual (train_residual.json),
# generated from the flip-averaged prior noised to t = 350 (the model file's recommendation) and scored
# (--method residual; bundle/docs/README.md, "A supervised prior refined by diffusion"); QUICKSTART_METHOD=latent:
# the four latent stages of the paper's method
METHOD="${QUICKSTART_METHOD:-residual}"
case "$METHOD" in
residual)
    N=4
    step "[1/4] supervised prior (BasicUNet, SLO -> late, L1)" training \
        --config_file "$(configs common.json train_prior.json $RECIPE)" "${TRAIN[@]}" \
        ${QUICKSTART_EPOCHS_PRIOR:+--max_epochs "$QUICKSTART_EPOCHS_PRIOR"} "$@"
    step "[2/4] diffusion on the prior's residual (pixel space)" training \
        --config_file "$(configs common.json train_residual.json $RECIPE)" "${TRAIN[@]}" \
        ${QUICKSTART_EPOCHS_RESIDUAL:+--max_epochs "$QUICKSTART_EPOCHS_RESIDUAL"} "$@"
    MODEL="$BUNDLE_ROOT/models/model_residual.pt (the prior alone, one forward pass: $BUNDLE_ROOT/models/model_prior.pt)"
    ;;
latent)
    N=6
    step "[1/6] FA autoencoder (L1 + KL + adversarial)" training \
        --config_file "$(configs common.json train_autoencoder.json $RECIPE)" "${TRAIN[@]}" \
        ${QUICKSTART_EPOCHS_1:+--max_epochs "$QUICKSTART_EPOCHS_1"} "$@"
    step "[2/6] gated SLO encoder (FA autoencoder frozen)" training \
        --config_file "$(configs common.json train_autoencoder.json train_condition_encoder.json $RECIPE)" \
        "${TRAIN[@]}" ${QUICKSTART_EPOCHS_2:+--max_epochs "$QUICKSTART_EPOCHS_2"} "$@"
    step "[3/6] early-phase latent diffusion (U-Net + ControlNet)" training \
        --config_file "$(configs common.json train_diffusion.json $RECIPE)" "${TRAIN[@]}" "${LR_MULT[@]}" \
        ${QUICKSTART_EPOCHS_3:+--max_epochs "$QUICKSTART_EPOCHS_3"} "$@"
    step "[4/6] late-phase fine-tuning with the CTRD loss" training \
        --config_file "$(configs common.json train_diffusion.json train_late.json $RECIPE)" "${TRAIN[@]}" \
        "${LR_MULT[@]}" ${QUICKSTART_EPOCHS_4:+--max_epochs "$QUICKSTART_EPOCHS_4"} \
        ${CS:+--sampling_recommendation "{'conditioning_scale': $CS}"} "$@"
    MODEL="$BUNDLE_ROOT/models/model.pt (stage weights and checkpoints: $BUNDLE_ROOT/models/)"
    ;;
*)
    echo "QUICKSTART_METHOD=$METHOD: use residual (the default) or latent." >&2
    exit 2
    ;;
esac
step "[$((N - 1))/$N] generate late-phase FA for the held-out phantoms" \
    --config_file "$(configs inference.json $RECIPE)" "${INFER[@]}" --method "$METHOD"
step "[$N/$N] score the held-out phantoms beside the constant-image and early-phase predictors" \
    --config_file "$(configs inference.json evaluate.json $RECIPE)" "${INFER[@]}" --method "$METHOD"

if [[ -n "${QUICKSTART_DRY_RUN:-}" ]]; then exit 0; fi
echo
echo "Scores of the held-out phantoms ($BUNDLE_ROOT/eval/report/summary.json):"
"$PYTHON" -m monai_lpuwf.metrics.acceptance "$BUNDLE_ROOT/eval/report/summary.json" || true
echo
echo "Generated late-phase images ($BUNDLE_ROOT/work/output):"
ls -1 "$BUNDLE_ROOT/work/output"
echo
echo "Outputs of the main job (total $((SECONDS - start_all)) s):"
echo "  trained model:      $MODEL"
echo "  generated images:   $BUNDLE_ROOT/work/output/"
echo "  scores and montage: $BUNDLE_ROOT/eval/report/ (scores.csv, summary.json, examples.png: SLO | generated | real)"
echo "  TensorBoard logs:   $BUNDLE_ROOT/eval/<stage> (tensorboard --logdir $BUNDLE_ROOT/eval)"
echo "  demo data:          $BUNDLE_ROOT/work/data/"
