"""GRPO on Ray RLlib's new API stack: config, algorithm, learner, module and a text-env runner. The
advantage estimators and the loss are the shared pieces of ``agents.training.algorithms``; this package is the
RLlib plumbing around them (see ``scripts/train_grpo_rllib.py``)."""

from agents.training.rllib.algorithm import DEFAULT_ENV_ID, GRPO, GRPOConfig
from agents.training.rllib.env_runner import ReSearchEnvRunner
from agents.training.rllib.learner import GRPOTorchLearner
from agents.training.rllib.module import CausalLMModule

__all__ = ["DEFAULT_ENV_ID", "GRPO", "CausalLMModule", "GRPOConfig", "GRPOTorchLearner", "ReSearchEnvRunner"]
