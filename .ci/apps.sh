#!/usr/bin/env bash
# CI, ecosystem part: the MONAI Label and MONAI Deploy apps, each in its own environment (their dependencies clash:
# MONAI Label's pins bring numpy 1.26, Deploy's cupy wants numpy >= 2), installed from scratch as
# apps/monailabel/README.md and apps/deploy/README.md say, then their integration tests.
# Self-contained: `bash .ci/apps.sh` from anywhere. LPUWF_APPS_VENVS=<folder> puts the two environments there
# (default: the project root, .venv-label and .venv-deploy, both git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENVS=${LPUWF_APPS_VENVS:-$ROOT}
PYTHON=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
start=$SECONDS

stamp() { echo "[apps.sh] $1 ($((SECONDS - start)) s)"; }

make_env() {  # make_env <dir>: fresh-or-existing venv with torch and the project (with its test extra)
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
    # torch first: 2.13.0 is the small CPU build here; pyproject bounds torch so nothing newer is pulled.
    "$1/bin/python" -m pip install -q torch==2.13.0
    "$1/bin/python" -m pip install -q -e "$ROOT[test]"
}

# --- MONAI Label -------------------------------------------------------------------------------------------------
LABEL=$VENVS/.venv-label
make_env "$LABEL"
# monailabel declares torchvision and sam2 (unused by the app, and no torchvision build works with CPU torch
# 2.13.0): install it without dependencies, then the ones it needs (pydicom 2 for pydicom-seg).
"$LABEL/bin/python" -m pip install -q --no-deps monailabel==0.8.5
"$LABEL/bin/python" -m pip install -q -r apps/monailabel/requirements.txt
"$LABEL/bin/python" -c "import monailabel.main, monailabel.tasks.infer.basic_infer, monai_lpuwf; print('monailabel', monailabel.__version__)"
stamp "MONAI Label environment ready"

# --- MONAI Deploy ------------------------------------------------------------------------------------------------
DEPLOY=$VENVS/.venv-deploy
make_env "$DEPLOY"
"$DEPLOY/bin/python" -m pip install -q -r apps/deploy/requirements.txt pyyaml
"$DEPLOY/bin/python" -c "import monai, monai.deploy.core, holoscan, monai_lpuwf; print('monai-deploy-app-sdk ok')"
stamp "MONAI Deploy environment ready"

# --- tests (the imports above fail this script rather than letting the tests skip) -------------------------------
# the monailabel launcher runs the `python` first on PATH: the test puts its environment's bin there
(PATH="$LABEL/bin:$PATH" "$LABEL/bin/python" -m pytest -q -p no:cacheprovider tests/apps/test_monailabel.py)
stamp "MONAI Label tests done"
"$DEPLOY/bin/python" -m pytest -q -p no:cacheprovider tests/apps/test_deploy.py
stamp "MONAI Deploy tests done"
