"""Generation with Hugging Face transformers: a batched decode loop with left padding and a KV cache,
greedy by default or temperature sampling from a seeded ``torch.Generator``. It is our own loop rather
than ``model.generate`` so that finished sequences leave the batch at once and stop strings are
checked on a short decoded tail only."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from agents.generation.base import Generation, decode, finish_chunk, token_caps
from agents.policies.models import load_causal_lm


class HFBackend:
    """A :class:`~agents.generation.GenerationBackend` over a transformers causal LM.

    * Contexts are left-padded into batches of at most ``batch_size``; position ids skip the padding,
      so a context generates the same tokens alone or in a batch (up to float rounding).
    * After each token, a sequence is finished by a stop token, its cap, or a stop string found in the
      decoding of its last few tokens; finished rows are dropped from the batch and the KV cache, so
      one long sequence never makes the others generate on.
    * ``temperature=0`` is greedy; otherwise tokens are sampled from ``softmax(logits / temperature)``
      with a generator seeded by ``seed`` (reproducible for the same batches in the same order).

    Example:
        >>> backend = HFBackend.from_pretrained()  # the tiny default model
        >>> ids = backend.tokenizer.encode("Question: who? Answer:")
        >>> [chunk] = backend.generate([ids], max_new_tokens=8, stop=["</search>"])
        >>> chunk.finish_reason in ("stop", "eos", "length")
        True
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: Any, *, temperature: float = 0.0, seed: int = 0, batch_size: int = 64
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.batch_size = temperature, batch_size
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        eos = model.generation_config.eos_token_id
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_token_ids: list[int] = [eos] if isinstance(eos, int) else list(eos)
        pad = tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else self.eos_token_ids[0]

    @classmethod
    def from_pretrained(
        cls, model: str | os.PathLike | None = None, *, device: str | None = None, **kwargs: Any
    ) -> HFBackend:
        """A backend over a local checkpoint (None: the tiny default model)."""
        lm, tokenizer = load_causal_lm(model, device=device)
        return cls(lm, tokenizer, **kwargs)

    def reseed(self, seed: int) -> None:
        """Seed the following calls' sampling: the same batches in the same order then draw the same tokens."""
        self.generator.manual_seed(int(seed))

    @torch.inference_mode()
    def generate(
        self,
        contexts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] | None = None,
    ) -> list[Generation]:
        caps = token_caps(contexts, max_new_tokens)
        stop_ids = set(self.eos_token_ids if stop_token_ids is None else stop_token_ids)
        chunks: list[Generation] = []
        for start in range(0, len(contexts), self.batch_size):
            end = start + self.batch_size
            raw = self._decode_batch(contexts[start:end], caps[start:end], stop, stop_ids)
            chunks += [finish_chunk(self.tokenizer, ids, lps, stop, list(stop_ids)) for ids, lps in raw]
        return chunks

    def _decode_batch(
        self, contexts: Sequence[Sequence[int]], caps: list[int], stop: Sequence[str], stop_ids: set[int]
    ) -> list[tuple[list[int], list[float]]]:
        device = self.model.device
        width = max(len(c) for c in contexts)
        input_ids = torch.full((len(contexts), width), self.pad_token_id, dtype=torch.long, device=device)
        attention = torch.zeros_like(input_ids)
        for row, context in enumerate(contexts):
            input_ids[row, width - len(context) :] = torch.tensor(list(context), device=device)
            attention[row, width - len(context) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        live = list(range(len(contexts)))  # the context index of each row still in the batch
        new_ids: list[list[int]] = [[] for _ in contexts]
        new_logprobs: list[list[float]] = [[] for _ in contexts]
        tail_tokens = max((len(s) for s in stop), default=0) + 1  # a char costs at least one token
        while live:
            logits = (
                self.model(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    **{cache_argument(self.model): cache},
                    use_cache=True,
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
            )
            tokens, logprobs = self._pick(logits)
            keep = []
            for row, (i, token, logprob) in enumerate(zip(live, tokens.tolist(), logprobs.tolist(), strict=True)):
                new_ids[i].append(token)
                new_logprobs[i].append(logprob)
                finished = (
                    token in stop_ids
                    or len(new_ids[i]) >= caps[i]
                    or (stop and any(s in decode(self.tokenizer, new_ids[i][-tail_tokens:]) for s in stop))
                )
                if not finished:
                    keep.append(row)
            if len(keep) < len(live):
                index = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(index)
                tokens, attention, positions = tokens[index], attention[index], positions[index]
                live = [live[row] for row in keep]
            input_ids = tokens[:, None]
            attention = torch.cat([attention, torch.ones_like(input_ids)], dim=-1)
            positions = positions[:, -1:] + 1
        return list(zip(new_ids, new_logprobs, strict=True))

    def _pick(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next tokens and their log-probabilities under the sampling distribution."""
        if self.temperature == 0:
            logprobs = torch.log_softmax(logits, dim=-1)
            tokens = logits.argmax(dim=-1)
        else:
            logprobs = torch.log_softmax(logits / self.temperature, dim=-1)
            tokens = torch.multinomial(logprobs.exp(), 1, generator=self.generator).squeeze(-1)
        return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def cache_argument(model: PreTrainedModel) -> str:
    """The name under which ``model.forward`` takes its KV cache: ``cache`` from transformers 5.20, ``past_key_values``
    before (vLLM for CPU pins transformers below 5.20). Passing the other name would be swallowed by ``**kwargs``
    and every step would run without its history."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
