"""GRPO on Ray RLlib's new API stack: config + algorithm, learner, module, a text-env runner, the cluster start-up
and the one adapter for an RLlib private API. The advantage estimators and the loss are the shared pieces of
``agents.training.algorithms``; this package is the RLlib plumbing around them (see ``scripts/train_grpo_rllib.py``).

Names are imported on first use, so ``agents.training.rllib.cluster`` can run before ``ray`` is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_ENV_ID": "agents.training.rllib.algorithm",
    "GRPO": "agents.training.rllib.algorithm",
    "GRPOConfig": "agents.training.rllib.algorithm",
    "CausalLMModule": "agents.training.rllib.module",
    "GRPOTorchLearner": "agents.training.rllib.learner",
    "ReSearchEnvRunner": "agents.training.rllib.env_runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
