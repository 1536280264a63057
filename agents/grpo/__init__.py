"""GRPO on Ray RLlib's new API stack: config, algorithm, learner, module and a text-env runner. The
advantage estimators and the loss are the shared pieces of ``agents.algorithms``; this package is the
RLlib plumbing around them (see ``scripts/train_grpo_rllib.py``)."""

from agents.grpo.algorithm import GRPO
from agents.grpo.config import DEFAULT_ENV_ID, GRPOConfig
from agents.grpo.env_runner import ReSearchEnvRunner
from agents.grpo.learner import GRPOTorchLearner
from agents.grpo.module import CausalLMModule

__all__ = ["DEFAULT_ENV_ID", "GRPO", "CausalLMModule", "GRPOConfig", "GRPOTorchLearner", "ReSearchEnvRunner"]
