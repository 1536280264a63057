"""Evaluation on held-out questions during and around training (``--eval-every``): one fixed question set, a
fixed sampler seed (greedy by default), and the numbers under the names the training log uses (``eval/…``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

from agents.generation.rollout import RolloutConfig, token_env
from agents.training.torch_loop import evaluate_policy


@dataclass
class HeldOutEval:
    """Plays ``samples`` episodes per question of ``question_ids`` on envs from ``make_env`` and summarises them.

    The same seed at every call gives common random numbers, so successive evaluations differ by the policy
    alone. Envs are built on the first call (they need the policy's tokenizer) and reused.
    """

    make_env: Callable[[], gym.Env]
    question_ids: Sequence[str]
    rollout: RolloutConfig
    samples: int = 1
    temperature: float = 0.0
    seed: int = 1234
    _envs: list[gym.Env] = field(default_factory=list, repr=False)

    def __call__(self, model: torch.nn.Module, tokenizer: Any) -> dict[str, float]:
        if not self._envs:
            n = min(len(self.question_ids) * self.samples, 256)
            self._envs = [token_env(self.make_env(), tokenizer, self.rollout) for _ in range(n)]
        was_training = model.training
        try:
            result = evaluate_policy(
                model,
                tokenizer,
                self._envs,
                self.question_ids,
                self.samples,
                self.rollout,
                temperature=self.temperature,
                seed=self.seed,
            ).summary()
        finally:
            model.train(was_training)
        return {
            "eval/reward": result["reward"],
            "eval/reward_se": result["reward_se"],
            "eval/f1": result["f1"],
            "eval/format_ok_rate": result["format_ok"],
            "eval/searches_per_episode": result["searches"],
            "eval/n": float(result["n"]),
        }

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []
