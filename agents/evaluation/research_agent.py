"""The ReSearch agent: the model itself drives search through the tag protocol, run by the rollout engine."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import gymnasium as gym

from agents.evaluation.records import EpisodeRecord, record_from_info
from agents.generation.base import GenerationBackend
from agents.generation.rollout import RolloutConfig, run_episodes, token_env


@dataclass
class ReSearchAgent:
    """Plays each question as one multi-turn episode (see :func:`agents.generation.rollout.run_episodes`)."""

    backend: GenerationBackend
    config: RolloutConfig = field(default_factory=RolloutConfig)
    name: str = "research"

    def run(self, envs: Sequence[gym.Env], question_ids: Sequence[str]) -> Iterator[EpisodeRecord]:
        token_envs = [token_env(env, self.backend.tokenizer, self.config) for env in envs]
        for episode in run_episodes(token_envs, self.backend, question_ids, self.config):
            text, info = episode.observation["text"], episode.info
            env = next(e for e in token_envs if e.unwrapped.record.id == episode.question_id)
            yield record_from_info(
                env,
                episode.reward,
                info,
                text[info["prompt_length"] :],
                generated_tokens=episode.generated_tokens,
                details={
                    "agent": self.name,
                    "turns": len(episode.chunks),
                    "truncated": episode.truncated,
                    "finish_reasons": [c.finish_reason for c in episode.chunks],
                    "generate_s": episode.generate_s,
                    "env_s": episode.env_s,
                },
            )
