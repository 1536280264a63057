"""Training batches from rollouts: one :class:`Trajectory` per episode (token ids, loss mask, the
sampler's log-probs, reward, group), padded into tensors for the learner."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


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
    """Turn an ``agents.generation.rollout.Episode`` (run over ``TokenizedEnv``) into a :class:`Trajectory`.

    The policy tokens of the observation are exactly the sampled chunks' ids in order (TokenizedEnv keeps
    them verbatim), so the chunks' log-probs line up with the positions where ``policy_mask`` is 1.
    """
    input_ids = list(episode.observation["input_ids"])
    policy_mask = list(episode.observation["policy_mask"])
    sampled = [t for chunk in episode.chunks for t in chunk.token_ids]
    sampled_logprobs = [lp for chunk in episode.chunks for lp in chunk.logprobs]
    positions = [i for i, m in enumerate(policy_mask) if m]
    if [input_ids[i] for i in positions] != sampled or len(sampled_logprobs) != len(sampled):
        raise ValueError(
            f"episode {episode.question_id}: the policy tokens of the observation are not the "
            "sampled chunks; run rollouts over wrappers.TokenizedEnv"
        )
    loss_mask, old_logprobs = [0] * len(input_ids), [0.0] * len(input_ids)
    for i, logprob in zip(positions, sampled_logprobs, strict=True):
        if not math.isnan(logprob):  # NaN: a token re-encoded after a stop string, never sampled as such
            loss_mask[i], old_logprobs[i] = 1, float(logprob)
    from research_env.reward import EpisodeOutcome  # here: the loss pieces stay importable without the env

    outcome = EpisodeOutcome.from_info(episode.info)
    stats = {
        "reward": float(episode.reward),
        "f1": outcome.f1,
        "format_ok": float(outcome.format_ok),
        "searches": float(episode.info["num_searches"]),
        "response_tokens": float(sum(policy_mask)),
        "truncated": float(episode.truncated),
    }
    return Trajectory(input_ids, loss_mask, old_logprobs, float(episode.reward), group_id, stats)


def pad_right(rows: Sequence[Sequence[Any]], value: float, dtype: torch.dtype) -> torch.Tensor:
    """Rows of different lengths as one [B, T] tensor, filled on the right with ``value``."""
    length = max(len(row) for row in rows)
    return torch.tensor([list(row) + [value] * (length - len(row)) for row in rows], dtype=dtype)


def collate_tokens(
    input_ids: Sequence[Sequence[int]], loss_mask: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and loss_mask [B, T]: what any token-level loss reads (SFT too)."""
    return {
        "input_ids": pad_right(input_ids, pad_token_id, torch.long),
        "attention_mask": pad_right([[1] * len(row) for row in input_ids], 0, torch.long),
        "loss_mask": pad_right(loss_mask, 0, torch.float32),
    }


def collate(trajectories: Sequence[Trajectory], advantages: torch.Tensor, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, loss_mask, old_logprobs [B, T] and advantages [B]."""
    return {
        **collate_tokens([t.input_ids for t in trajectories], [t.loss_mask for t in trajectories], pad_token_id),
        "old_logprobs": pad_right([t.old_logprobs for t in trajectories], 0.0, torch.float32),
        "advantages": advantages.to(torch.float32),
    }


def minibatch_rows(
    group_ids: Sequence[int], advantages: torch.Tensor, num_minibatches: int, drop_zero_advantage: bool
) -> list[list[int]]:
    """Row indices of each optimizer step of one pass: whole groups dealt round-robin (the groups' order is
    already random), less the zero-advantage rows when ``drop_zero_advantage``; empty minibatches are skipped.

    Both trainers step on these, so a group's baseline and its members always share an update.
    """
    group_of = list(group_ids)
    groups = list(dict.fromkeys(group_of))
    keep = (advantages.abs() > 1e-8).tolist() if drop_zero_advantage else [True] * len(group_of)
    minibatches = []
    for j in range(num_minibatches):
        chosen = set(groups[j::num_minibatches])
        rows = [i for i, g in enumerate(group_of) if g in chosen and keep[i]]
        if rows:
            minibatches.append(rows)
    return minibatches
