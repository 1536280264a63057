"""Per-token log-probabilities and entropies of a causal LM over whole transcripts, aligned with the
input ids: position t holds log p(ids[t] | ids[:t]) (position 0, always prompt, holds 0)."""

from __future__ import annotations

import torch


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logprobs [B, T], entropy [B, T] or None) under ``model`` at the sampling ``temperature``; differentiable.

    The temperature is the rollouts': the policy a trainer optimises is the distribution its tokens were sampled
    from, ``softmax(logits / temperature)``, and the old log-probs it is compared with are that distribution's.

    Gathers the chosen token's logit and subtracts the log-partition instead of materialising a full
    log-softmax copy of the [B, T, V] logits (V = 151,665 for Qwen2.5).
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float() / temperature
    log_z = torch.logsumexp(logits, dim=-1)  # [B, T-1]
    chosen = logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
    logprobs = torch.nn.functional.pad(chosen - log_z, (1, 0))  # [B, T]
    entropy = None
    if with_entropy:
        probs = torch.softmax(logits, dim=-1)
        entropy = torch.nn.functional.pad(log_z - (probs * logits).sum(-1), (1, 0))
    return logprobs, entropy


def masked_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs` (the same ``temperature``) on the positions where ``mask`` is 1 only (0 elsewhere).

    The LM head runs on those positions alone: result blocks and the prompt are ~90% of a ReSearch
    transcript and never carry loss, so materialising their [T, V] logits is most of a learner step's cost.
    """
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
    rows, cols = mask[:, 1:].nonzero(as_tuple=True)  # the state at cols predicts the token at cols + 1
    logits = model.get_output_embeddings()(hidden[rows, cols]).float() / temperature  # [N, V]
    log_z = torch.logsumexp(logits, dim=-1)  # [N]
    chosen = logits.gather(-1, input_ids[rows, cols + 1][:, None]).squeeze(-1)  # [N]
    zeros = torch.zeros(input_ids.shape, dtype=logits.dtype, device=logits.device)  # [B, T]
    logprobs = zeros.index_put((rows, cols + 1), chosen - log_z)
    entropy = None
    if with_entropy:
        token_entropy = log_z - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        entropy = zeros.index_put((rows, cols + 1), token_entropy)
    return logprobs, entropy
