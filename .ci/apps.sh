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
# The install commands are the ```bash block under "## Install" of apps/monailabel/README.md, run as written (only
# the environment's folder and the python that creates it are substituted), so the README is what CI tests. The
# test tools come after the server's own import check: nothing they bring can hide a dependency the README misses.
LABEL=$VENVS/.venv-label
LABEL_INSTALL=$(awk '/^## Install/{f=1} f&&/^```bash/{b=1;next} b&&/^```/{exit} b{print}' apps/monailabel/README.md)
[ -n "$LABEL_INSTALL" ] || { echo "[apps.sh] no bash block under '## Install' in apps/monailabel/README.md" >&2; exit 1; }
LABEL_INSTALL=${LABEL_INSTALL//.venv-label/$LABEL}
LABEL_INSTALL=${LABEL_INSTALL//python3 -m venv/$PYTHON -m venv}
printf '[apps.sh] MONAI Label install (apps/monailabel/README.md):\n%s\n' "$LABEL_INSTALL"
PIP_QUIET=1 bash -euo pipefail -c "$LABEL_INSTALL"
# what `monailabel start_server` imports (the app's own modules are imported by the test's server)
"$LABEL/bin/python" -c "import monailabel.app, monailabel.tasks.infer.basic_infer, monai_lpuwf; print('monailabel', monailabel.__version__)"
"$LABEL/bin/python" -m pip install -q "pytest>=8" "pytest-timeout>=2.3"
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
