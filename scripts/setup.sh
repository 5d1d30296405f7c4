#!/usr/bin/env bash
# Set-up on a fresh machine: virtual environment, torch (pinned CPU wheel first), netshrink with its
# test and hf (transformers) extras, and the Fashion-MNIST data when it is missing. Safe to rerun.
# Each step says what it does before it starts, and how long it took when it ends, so a long step
# never looks like a hang.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

step_start=0
step() {  # step "what is being done": announce a step
  step_start=$SECONDS
  echo "setup: $1 ..."
}
done_step() {
  echo "setup:   done in $((SECONDS - step_start)) s"
}

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
  done_step
fi
# torch first, exactly the CPU wheel on this disk, so pip never resolves another (CUDA) build.
step "installing torch==2.13.0 (the CPU wheel; takes a minute or more the first time)"
"${PIP[@]}" -q "torch==2.13.0"
done_step
step "installing netshrink (editable) with its test and hf (transformers) extras from pyproject.toml"
"${PIP[@]}" -q -e ".[test,hf]"
done_step
DATA_DIR=${NETSHRINK_DATA:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ]; then
    step "Fashion-MNIST is not in $DATA_DIR: apt-get update (package lists; can take a few minutes)"
    apt-get update -q
    done_step
    step "apt-get install dataset-fashion-mnist (about 30 MB)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist
    done_step
  else
    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2
    exit 1
  fi
fi
touch "$VENV/.installed"
echo "setup: ready ($VENV)"
