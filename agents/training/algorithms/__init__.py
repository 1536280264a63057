"""RL algorithms as small registered pieces: an advantage estimator and a loss aggregation per
algorithm, selected by name, shared by the RLlib trainer and the plain-PyTorch loop.

Adding one takes registrations only, never an edit elsewhere, e.g. a median baseline with a per-sequence mean::

    @register_advantage_estimator("median")
    def median_advantages(rewards, group_ids): ...

    @register_loss_aggregator("sequence_mean", row_share=trajectory_share)
    def sequence_mean(per_token, mask, config): ...

    ALGORITHMS["median_pg"] = AlgorithmSpec(advantage="median", aggregation="sequence_mean")

The aggregation's ``row_share`` is what the trainers use to split a batch over micro-batches and learners.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.training.algorithms.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, register_advantage_estimator
from agents.training.algorithms.batch import (
    Trajectory,
    collate,
    collate_tokens,
    minibatch_rows,
    trajectory_from_episode,
)
from agents.training.algorithms.logprobs import masked_token_logprobs, token_logprobs
from agents.training.algorithms.losses import (
    LOSS_AGGREGATORS,
    LossAggregation,
    LossConfig,
    get_aggregation,
    k3_kl,
    masked_mean,
    policy_loss,
    register_loss_aggregator,
    token_share,
    trajectory_share,
)


@dataclass(frozen=True)
class AlgorithmSpec:
    """What distinguishes GRPO-family algorithms: how advantages are estimated and how per-token losses
    are aggregated; the clipped loss, KL and entropy terms are shared."""

    advantage: str
    aggregation: str = "token_mean"


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "grpo": AlgorithmSpec("grpo", "token_mean"),
    "dr_grpo": AlgorithmSpec("dr_grpo", "constant_norm"),
    "rloo": AlgorithmSpec("rloo", "token_mean"),
    "reinforce_pp_baseline": AlgorithmSpec("reinforce_pp_baseline", "token_mean"),
}


def get_algorithm(name: str) -> AlgorithmSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}") from None


__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "ALGORITHMS",
    "LOSS_AGGREGATORS",
    "AlgorithmSpec",
    "LossAggregation",
    "LossConfig",
    "Trajectory",
    "collate",
    "collate_tokens",
    "compute_advantages",
    "minibatch_rows",
    "get_aggregation",
    "get_algorithm",
    "k3_kl",
    "masked_mean",
    "masked_token_logprobs",
    "policy_loss",
    "register_advantage_estimator",
    "register_loss_aggregator",
    "token_logprobs",
    "token_share",
    "trajectory_from_episode",
    "trajectory_share",
]
