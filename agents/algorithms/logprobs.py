"""Per-token log-probabilities and entropies of a causal LM over whole transcripts, aligned with the
input ids: position t holds log p(ids[t] | ids[:t]) (position 0, always prompt, holds 0)."""

from __future__ import annotations

import torch


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logprobs [B, T], entropy [B, T] or None) under ``model``; differentiable.

    Gathers the chosen token's logit and subtracts the log-partition instead of materialising a full
    log-softmax copy of the [B, T, V] logits (V = 151,665 for Qwen2.5).
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # [B, T-1, V]
    log_z = torch.logsumexp(logits, dim=-1)  # [B, T-1]
    chosen = logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
    logprobs = torch.nn.functional.pad(chosen - log_z, (1, 0))  # [B, T]
    entropy = None
    if with_entropy:
        probs = torch.softmax(logits, dim=-1)
        entropy = torch.nn.functional.pad(log_z - (probs * logits).sum(-1), (1, 0))
    return logprobs, entropy
