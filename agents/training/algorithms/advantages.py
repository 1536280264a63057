"""Group-relative advantage estimators: one scalar per trajectory, computed where the whole group of
rollouts of a prompt is visible (the driver), then broadcast over the trajectory's tokens by the loss."""

from __future__ import annotations

from collections.abc import Callable

import torch

#: ``estimator(rewards [N], group_ids [N]) -> advantages [N]``
AdvantageEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
EPS = 1e-6


def register_advantage_estimator(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Register an estimator under ``name`` so that a config can select it by that name."""

    def register(fn: AdvantageEstimator) -> AdvantageEstimator:
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return register


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-trajectory group mean, unbiased group std and group size, each [N]."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=rewards.dtype).index_add_(0, inverse, rewards)
    means = sums / counts
    squares = torch.zeros(len(counts), dtype=rewards.dtype).index_add_(0, inverse, (rewards - means[inverse]) ** 2)
    stds = torch.sqrt(squares / (counts - 1).clamp(min=1))
    return means[inverse], stds[inverse], counts[inverse]


@register_advantage_estimator("grpo")
def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """GRPO (SPEC §6): ``(r - mean(group)) / (std(group) + 1e-6)``. A group of one has no baseline: its
    advantage is its reward (verl's convention)."""
    mean, std, size = _group_stats(rewards, group_ids)
    alone = size == 1
    return torch.where(alone, rewards, (rewards - mean) / (std + EPS))


@register_advantage_estimator("dr_grpo")
def dr_grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO (Liu et al., 2025): ``r - mean(group)``; dividing by the std over-weights easy and
    hard prompts, whose groups have small spreads."""
    mean, _, _ = _group_stats(rewards, group_ids)
    return rewards - mean


@register_advantage_estimator("rloo")
def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """RLOO: the baseline of each rollout is the mean of the *other* rollouts of its group,
    ``r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean(group))``; a group of one keeps its reward."""
    mean, _, size = _group_stats(rewards, group_ids)
    size = size.to(rewards.dtype)
    return torch.where(size > 1, size / (size - 1).clamp(min=1) * (rewards - mean), rewards)


@register_advantage_estimator("reinforce_pp_baseline")
def reinforce_pp_baseline_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """REINFORCE++-baseline (Hu et al., 2025): subtract the group mean, then normalise over the whole
    batch rather than per group, which is more stable when groups are small."""
    centered = dr_grpo_advantages(rewards, group_ids)
    if centered.numel() < 2:
        return centered
    return (centered - centered.mean()) / (centered.std() + EPS)


def compute_advantages(estimator: str, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Advantages [N] of trajectories with rewards [N] in groups group_ids [N] (long), by estimator name."""
    try:
        fn = ADVANTAGE_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {estimator!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}") from None
    # float64: in float32 a group of equal rewards has a mean off by ~1e-8, which the 1e-6 in GRPO's
    # denominator turns into a spurious advantage of ~1e-2 (found by the property test).
    return fn(rewards.to(torch.float64), group_ids).to(torch.float32)
