#!/usr/bin/env bash
# Set-up on a fresh machine: virtual environment, torch (pinned CPU wheel first), netshrink with its
# test extras, and the Fashion-MNIST data when it is missing. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# torch first, exactly the CPU wheel on this disk, so pip never resolves another (CUDA) build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
DATA_DIR=${NETSHRINK_DATA:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2
    exit 1
  fi
fi
touch "$VENV/.installed"
