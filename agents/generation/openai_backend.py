"""Generation through an OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang), which is how ReSearch
evaluates. Contexts are sent as token ids, so nothing is re-tokenised on the way in; the returned text is
re-encoded, with the stop string or EOS the server trimmed put back, and cut by the shared rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agents.generation.base import Generation, decode, find_stop, finish_chunk, per_context


class OpenAIBackend:
    """A :class:`~agents.generation.GenerationBackend` over ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    Requests run in parallel threads (servers batch them). vLLM extensions are sent in ``extra_body``
    (``include_stop_str_in_output``, ``stop_token_ids``, ``skip_special_tokens=False``); a server that
    ignores them still works: a trimmed stop string is restored from vLLM's ``stop_reason`` or, for a
    ``"stop"`` finish without a stop string, the EOS token is appended. Log-probs are the server's when
    it returns one per re-encoded token, else NaN.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        api_key: str = "EMPTY",
        timeout_s: float = 300.0,
        max_workers: int = 16,
        eos_token_ids: Sequence[int] | None = None,
    ) -> None:
        from openai import OpenAI

        self.tokenizer, self.model, self.temperature, self.seed = tokenizer, model, temperature, seed
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids is not None else [tokenizer.eos_token_id]
        self._client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=3)
        self._max_workers = max_workers

    def generate(
        self,
        contexts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] | None = None,
    ) -> list[Generation]:
        caps = per_context(max_new_tokens, len(contexts))
        stop_ids = list(self.eos_token_ids if stop_token_ids is None else stop_token_ids)
        with ThreadPoolExecutor(max_workers=min(self._max_workers, max(1, len(contexts)))) as pool:
            return list(pool.map(lambda c, n: self._complete(c, n, stop, stop_ids), contexts, caps))

    def _complete(self, context: Sequence[int], cap: int, stop: Sequence[str], stop_ids: list[int]) -> Generation:
        response = self._client.completions.create(
            model=self.model,
            prompt=list(context),
            max_tokens=cap,
            temperature=self.temperature,
            seed=self.seed,
            stop=list(stop) or None,
            logprobs=1,
            extra_body={"include_stop_str_in_output": True, "stop_token_ids": stop_ids, "skip_special_tokens": False},
        )
        choice = response.choices[0]
        text = choice.text
        if choice.finish_reason == "stop" and find_stop(text, stop) < 0:
            stop_reason = getattr(choice, "stop_reason", None)
            if isinstance(stop_reason, str):
                text += stop_reason
            elif not any(text.endswith(decode(self.tokenizer, [i])) for i in stop_ids):
                text += decode(self.tokenizer, [stop_reason if isinstance(stop_reason, int) else stop_ids[0]])
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        served = list(getattr(choice.logprobs, "token_logprobs", None) or [])
        logprobs = [float(x) for x in served] if len(served) == len(ids) else [math.nan] * len(ids)
        return finish_chunk(self.tokenizer, ids, logprobs, stop, stop_ids)
