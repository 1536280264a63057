"""The clipped policy-gradient loss of GRPO and its relatives, with the k3 KL to a frozen reference
and an entropy bonus, masked to the policy's own tokens (SPEC §6). Read it like the equations:

    ratio      = exp(logp - old_logp)                                  [B, T]
    pg_loss    = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))   [B, T]
    kl (k3)    = exp(ref_logp - logp) - (ref_logp - logp) - 1          [B, T]
    per_token  = pg_loss + beta * kl - entropy_coef * entropy          [B, T]
    loss       = aggregate(per_token, mask)                            scalar
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: ``aggregate(per_token [B, T], mask [B, T], config) -> scalar``
Aggregator = Callable[[torch.Tensor, torch.Tensor, "LossConfig"], torch.Tensor]
#: ``row_share(mask [B, T]) -> [B]``: each row's share of the batch loss (summing to 1)
RowShare = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossAggregation:
    """How per-token losses become one scalar, and each trajectory's share of it.

    ``row_share`` is what lets a batch be split across micro-batches and DDP learners without changing the
    gradient: the trainer weights each part's loss by its rows' shares (see ``learner_shards``).
    """

    aggregate: Aggregator
    row_share: RowShare


LOSS_AGGREGATORS: dict[str, LossAggregation] = {}


@dataclass(frozen=True)
class LossConfig:
    """Coefficients of the loss; defaults are ReSearch's (SPEC §6)."""

    clip_ratio: float = 0.2
    kl_coef: float = 0.001
    entropy_coef: float = 0.001
    aggregation: str = "token_mean"
    max_response_tokens: int = 8192  # Dr. GRPO's constant normaliser


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (0 when there are none)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def token_share(mask: torch.Tensor) -> torch.Tensor:
    """A row's share of the batch's policy tokens: right for any loss that is a sum over tokens divided by
    the batch's token count."""
    return mask.sum(dim=1) / mask.sum().clamp(min=1)


def trajectory_share(mask: torch.Tensor) -> torch.Tensor:
    """Every trajectory the same share: right for a loss normalised by the number of trajectories."""
    return torch.full((mask.shape[0],), 1.0 / max(1, mask.shape[0]))


def register_loss_aggregator(name: str, row_share: RowShare = token_share) -> Callable[[Aggregator], Aggregator]:
    """Register how per-token losses become one scalar, selectable by name in a config, with each row's share
    of it (default: its share of the policy tokens)."""

    def register(fn: Aggregator) -> Aggregator:
        LOSS_AGGREGATORS[name] = LossAggregation(fn, row_share)
        return fn

    return register


def get_aggregation(name: str) -> LossAggregation:
    try:
        return LOSS_AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown loss aggregation {name!r}; known: {sorted(LOSS_AGGREGATORS)}") from None


@register_loss_aggregator("token_mean", row_share=token_share)
def token_mean(per_token: torch.Tensor, mask: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Mean over every policy token of the batch (verl's and ReSearch's default)."""
    return masked_mean(per_token, mask)


@register_loss_aggregator("constant_norm", row_share=trajectory_share)
def constant_norm(per_token: torch.Tensor, mask: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Dr. GRPO: sum over tokens divided by a constant (batch size x max response length), so long
    responses are not down-weighted per token."""
    return (per_token * mask).sum() / (per_token.shape[0] * config.max_response_tokens)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's low-variance, always non-negative estimator of KL(policy || reference), per token."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def policy_loss(
    logprobs: torch.Tensor,  # [B, T] log p(token) under the policy being trained
    old_logprobs: torch.Tensor,  # [B, T] under the policy that sampled the rollouts
    advantages: torch.Tensor,  # [B] one scalar per trajectory
    mask: torch.Tensor,  # [B, T] 1 on policy tokens; 0 on prompt, <result> blocks and padding
    config: LossConfig,
    ref_logprobs: torch.Tensor | None = None,  # [B, T] under the frozen reference, when kl_coef > 0
    entropy: torch.Tensor | None = None,  # [B, T] policy entropy, when entropy_coef > 0
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to minimise and the diagnostics RL users look for (CleanRL's names)."""
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    adv = advantages.to(logprobs.dtype)[:, None]  # [B, 1], broadcast over the trajectory's tokens
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1 - config.clip_ratio, 1 + config.clip_ratio)
    pg_loss = torch.max(pg_loss1, pg_loss2)
    per_token = pg_loss
    metrics: dict[str, float] = {}
    if config.kl_coef and ref_logprobs is not None:
        kl = k3_kl(logprobs, ref_logprobs)
        per_token = per_token + config.kl_coef * kl
        metrics["losses/kl"] = masked_mean(kl, mask).item()
    if entropy is not None:
        if config.entropy_coef:
            per_token = per_token - config.entropy_coef * entropy
        metrics["losses/entropy"] = masked_mean(entropy, mask).item()
    loss = get_aggregation(config.aggregation).aggregate(per_token, mask, config)
    with torch.no_grad():
        metrics["losses/policy_loss"] = masked_mean(pg_loss, mask).item()
        metrics["losses/approx_kl"] = masked_mean((ratio - 1) - log_ratio, mask).item()
        metrics["losses/clipfrac"] = masked_mean(((ratio - 1).abs() > config.clip_ratio).to(mask.dtype), mask).item()
    return loss, metrics
