#!/usr/bin/env bash
# The peers the benchmarks run side by side (`make peers`), installed into .peers with
# `pip install --target` and without their dependencies, so pip never resolves another torch:
# optimum-quanto (int8 / int4 weights; benchmarks/transformers_peers.py) with the ninja it builds
# with, and NNCF (quantize_with_accuracy_control on ONNX; benchmarks/auto_peers.py) with the small
# pure-Python packages it imports that the project's environment lacks, and Torch-Pruning (heads and
# MLP neurons of MiniLM; benchmarks/transformer_speed.py, which needs only torch and numpy). The benchmarks append
# .peers to sys.path; a peer that is not installed is reported as not run, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh
echo "setup: installing the benchmark peers into .peers (optimum-quanto, nncf, torch-pruning) ..."
.venv/bin/python -m pip install --disable-pip-version-check -q --no-deps --upgrade --target .peers \
    "optimum-quanto==0.2.7" "ninja==1.13.2" "nncf==3.4.0" "openvino-telemetry==2025.2.0" "pydot==4.0.1" \
    "tabulate==0.10.0" "torch-pruning==1.6.1"
echo "setup: peers ready"
