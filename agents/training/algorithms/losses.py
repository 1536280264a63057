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
LOSS_AGGREGATORS: dict[str, Aggregator] = {}


@dataclass(frozen=True)
class LossConfig:
    """Coefficients of the loss; defaults are ReSearch's (SPEC §6)."""

    clip_ratio: float = 0.2
    kl_coef: float = 0.001
    entropy_coef: float = 0.001
    aggregation: str = "token_mean"
    max_response_tokens: int = 8192  # Dr. GRPO's constant normaliser


def register_loss_aggregator(name: str) -> Callable[[Aggregator], Aggregator]:
    """Register how per-token losses become one scalar, selectable by name in a config."""

    def register(fn: Aggregator) -> Aggregator:
        LOSS_AGGREGATORS[name] = fn
        return fn

    return register


@register_loss_aggregator("token_mean")
def token_mean(per_token: torch.Tensor, mask: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Mean over every policy token of the batch (verl's and ReSearch's default)."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


@register_loss_aggregator("constant_norm")
def constant_norm(per_token: torch.Tensor, mask: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Dr. GRPO: sum over tokens divided by a constant (batch size x max response length), so long
    responses are not down-weighted per token."""
    return (per_token * mask).sum() / (per_token.shape[0] * config.max_response_tokens)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's low-variance, always non-negative estimator of KL(policy || reference), per token."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


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
    try:
        aggregate = LOSS_AGGREGATORS[config.aggregation]
    except KeyError:
        known = sorted(LOSS_AGGREGATORS)
        raise ValueError(f"unknown loss aggregation {config.aggregation!r}; known: {known}") from None
    loss = aggregate(per_token, mask, config)
    with torch.no_grad():
        metrics["losses/policy_loss"] = masked_mean(pg_loss, mask).item()
        metrics["losses/approx_kl"] = masked_mean((ratio - 1) - log_ratio, mask).item()
        metrics["losses/clipfrac"] = masked_mean(((ratio - 1).abs() > config.clip_ratio).to(mask.dtype), mask).item()
    return loss, metrics
