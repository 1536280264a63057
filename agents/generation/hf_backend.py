"""Generation with Hugging Face transformers: a batched decode loop with left padding and a KV cache,
greedy by default or temperature sampling from a seeded ``torch.Generator``. It is our own loop rather
than ``model.generate`` so that finished sequences leave the batch at once and stop strings are
checked on a short decoded tail only."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from agents.generation.base import Generation, decode, finish_chunk, token_caps
from agents.policies.models import load_causal_lm


class BatchBudgetWarning(RuntimeWarning):
    """A context needs more than ``max_batch_tokens`` by itself; it is generated alone, over the budget."""


class HFBackend:
    """A :class:`~agents.generation.GenerationBackend` over a transformers causal LM.

    * Contexts are left-padded into batches of at most ``batch_size``; position ids skip the padding,
      so a context generates the same tokens alone or in a batch (up to float rounding).
    * After each token, a sequence is finished by a stop token, its cap, or a stop string found in the
      decoding of its last few tokens; finished rows are dropped from the batch and the KV cache, so
      one long sequence never makes the others generate on.
    * ``temperature=0`` is greedy; otherwise tokens are sampled from ``softmax(logits / temperature)``
      with a generator seeded by ``seed`` (reproducible for the same batches in the same order).
    * ``max_batch_tokens`` bounds a batch's memory, which grows with its padded width, not its row count: a
      batch may hold at most that many tokens counted as ``rows x (longest context + largest cap)``, the
      width its KV cache can reach. Contexts are then grouped longest first, so that rows of one batch have
      similar lengths and little padding, and the longest batch runs first (an out-of-memory shows at once);
      rows keep their input order within a batch and results come back in input order. A context that
      alone exceeds the budget runs alone, with a :class:`BatchBudgetWarning`. None (the default): batches
      are ``batch_size`` consecutive contexts, as given.

    Example:
        >>> backend = HFBackend.from_pretrained()  # the tiny default model
        >>> ids = backend.tokenizer.encode("Question: who? Answer:")
        >>> [chunk] = backend.generate([ids], max_new_tokens=8, stop=["</search>"])
        >>> chunk.finish_reason in ("stop", "eos", "length")
        True
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int = 64,
        max_batch_tokens: int | None = None,
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1 or None (no budget), got {max_batch_tokens}")
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.batch_size, self.max_batch_tokens = temperature, batch_size, max_batch_tokens
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
        chunks: dict[int, Generation] = {}
        for batch in self.plan_batches([len(c) for c in contexts], caps):
            raw = self._decode_batch([contexts[i] for i in batch], [caps[i] for i in batch], stop, stop_ids)
            for i, (ids, lps) in zip(batch, raw, strict=True):
                chunks[i] = finish_chunk(self.tokenizer, ids, lps, stop, list(stop_ids))
        return [chunks[i] for i in range(len(contexts))]

    def plan_batches(self, lengths: Sequence[int], caps: Sequence[int]) -> list[list[int]]:
        """The batches, as lists of context indices in the order they run (see the class docstring)."""
        if self.max_batch_tokens is None:
            return [
                list(range(start, min(start + self.batch_size, len(lengths))))
                for start in range(0, len(lengths), self.batch_size)
            ]
        budget = self.max_batch_tokens
        batches: list[list[int]] = []
        batch: list[int] = []
        width = cap = 0
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            grown = (len(batch) + 1) * (max(width, lengths[i]) + max(cap, caps[i]))
            if batch and (len(batch) == self.batch_size or grown > budget):
                batches.append(sorted(batch))
                batch, width, cap = [], 0, 0
            if lengths[i] + caps[i] > budget:
                warnings.warn(
                    f"a context of {lengths[i]} tokens with a cap of {caps[i]} new tokens needs more than "
                    f"max_batch_tokens={budget}: it is generated alone; raise max_batch_tokens if memory allows",
                    BatchBudgetWarning,
                    stacklevel=3,
                )
            batch.append(i)
            width, cap = max(width, lengths[i]), max(cap, caps[i])
        if batch:
            batches.append(sorted(batch))
        return batches

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
