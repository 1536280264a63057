"""Training batches from rollouts: one :class:`Trajectory` per episode (token ids, loss mask, the
sampler's log-probs, reward, group), padded into tensors for the learner."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from research_env.reward import EpisodeOutcome


@dataclass
class Trajectory:
    """One finished episode as the learner sees it. ``loss_mask`` is 1 only on tokens the policy sampled
    with a known log-prob: prompt, ``<result>`` blocks and re-encoded stop-string tails are 0."""

    input_ids: list[int]
    loss_mask: list[int]
    old_logprobs: list[float]
    reward: float
    group_id: int
    stats: dict[str, float] = field(default_factory=dict)


def trajectory_from_episode(episode: Any, group_id: int) -> Trajectory:
    """Turn an ``agents.rollout.Episode`` (run over ``TokenizedEnv``) into a :class:`Trajectory`.

    The policy tokens of the observation are exactly the sampled chunks' ids in order (TokenizedEnv keeps
    them verbatim), so the chunks' log-probs line up with the positions where ``policy_mask`` is 1.
    """
    input_ids = list(episode.observation["input_ids"])
    policy_mask = list(episode.observation["policy_mask"])
    sampled = [t for chunk in episode.chunks for t in chunk.token_ids]
    sampled_logprobs = [lp for chunk in episode.chunks for lp in chunk.logprobs]
    positions = [i for i, m in enumerate(policy_mask) if m]
    if [input_ids[i] for i in positions] != sampled or len(sampled_logprobs) != len(sampled):
        raise ValueError(f"episode {episode.question_id}: the policy tokens of the observation are not the "
                         "sampled chunks; run rollouts over wrappers.TokenizedEnv")
    loss_mask, old_logprobs = [0] * len(input_ids), [0.0] * len(input_ids)
    for i, logprob in zip(positions, sampled_logprobs, strict=True):
        if not math.isnan(logprob):  # NaN: a token re-encoded after a stop string, never sampled as such
            loss_mask[i], old_logprobs[i] = 1, float(logprob)
    outcome = EpisodeOutcome.from_info(episode.info)
    stats = {"reward": float(episode.reward), "f1": outcome.f1, "format_ok": float(outcome.format_ok),
             "searches": float(episode.info["num_searches"]),
             "response_tokens": float(sum(policy_mask)), "truncated": float(episode.truncated)}
    return Trajectory(input_ids, loss_mask, old_logprobs, float(episode.reward), group_id, stats)


def collate(trajectories: Sequence[Trajectory], advantages: torch.Tensor, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, loss_mask, old_logprobs [B, T] and advantages [B]."""
    length = max(len(t.input_ids) for t in trajectories)

    def pad(rows: list[list], value: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=dtype)

    return {
        "input_ids": pad([t.input_ids for t in trajectories], pad_token_id, torch.long),
        "attention_mask": pad([[1] * len(t.input_ids) for t in trajectories], 0, torch.long),
        "loss_mask": pad([t.loss_mask for t in trajectories], 0, torch.float32),
        "old_logprobs": pad([t.old_logprobs for t in trajectories], 0.0, torch.float32),
        "advantages": advantages.to(torch.float32),
    }
