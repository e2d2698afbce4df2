#!/usr/bin/env bash
# Create or reuse .venv and install IntentOps with its training and test dependencies.
# torch is pinned to the CPU build available locally: an unpinned torch would pull gigabytes of CUDA wheels.
# Re-running is cheap: the install is skipped while pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
STAMP="$VENV/.intentops-installed"
WANT=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
export PIP_CONSTRAINT="$CONSTRAINTS"

echo "bootstrap: installing torch==$TORCH_VERSION (CPU) and build tools"
"${PIP[@]}" --upgrade pip setuptools wheel
"${PIP[@]}" "torch==$TORCH_VERSION"
# DeepSpeed builds from source against the installed torch; its CUDA ops are built lazily on GPU nodes.
echo "bootstrap: installing deepspeed (no CUDA ops)"
DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation "deepspeed>=0.16"
echo "bootstrap: installing intentops[train,dev] (editable)"
"${PIP[@]}" -e ".[train,dev]"
echo "$WANT" > "$STAMP"
echo "bootstrap: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
