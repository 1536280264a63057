"""The generation-backend interface that every agent uses: many token contexts in, one chunk each out,
stopped at a stop string or an EOS token, with the chunk's text, token ids and log-probs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class Generation:
    """One generated chunk.

    ``token_ids`` decode to exactly ``text``; ``logprobs[i]`` is the log-probability of ``token_ids[i]``
    under the sampling distribution (temperature applied). ``finish_reason`` is ``"stop"`` when the text
    ends with a stop string, ``"eos"`` when the last id is a stop token, ``"length"`` at the token cap.

    When the token that completed a stop string ran past it (e.g. ``">."`` after ``"</search"``), the text
    is cut right after the stop string and that token is replaced by the encoding of the part kept:
    those ``retokenized`` trailing ids were not sampled and their log-probs are NaN, so a trainer must
    mask them.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    retokenized: int = 0


@runtime_checkable
class GenerationBackend(Protocol):
    """A batched generator. ``generate`` returns one :class:`Generation` per context, in order.

    ``stop`` are strings searched in the generated text only; ``stop_token_ids`` end a chunk with that
    token included (None: the backend's EOS ids). ``max_new_tokens`` caps each chunk, one cap for all
    contexts or one per context (a token budget leaves each episode a different room).
    """

    tokenizer: Any

    def generate(
        self,
        contexts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        stop: Sequence[str] = (),
        stop_token_ids: Sequence[int] | None = None,
    ) -> list[Generation]: ...


def per_context(value: int | Sequence[int], n: int) -> list[int]:
    """Broadcast one cap to ``n`` contexts, or check that there is one per context."""
    values = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(values) != n:
        raise ValueError(f"max_new_tokens has {len(values)} values for {n} contexts")
    if any(v < 1 for v in values):
        raise ValueError(f"max_new_tokens must be >= 1, got {values}")
    return values


def token_caps(contexts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int]) -> list[int]:
    """The new-token cap of each context (see :func:`per_context`); every context must hold a token to continue."""
    if any(len(c) == 0 for c in contexts):
        raise ValueError("every context needs at least one token")
    return per_context(max_new_tokens, len(contexts))


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Decode keeping special tokens and spaces as written, so that text and ids stay in one-to-one step."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def find_stop(text: str, stop: Sequence[str], start: int = 0) -> int:
    """The end offset of the earliest stop string in ``text[start:]`` (earliest end wins), or -1."""
    ends = [at + len(s) for s in stop if s and (at := text.find(s, start)) >= 0]
    return min(ends, default=-1)


def finish_chunk(
    tokenizer: Any, ids: list[int], logprobs: list[float], stop: Sequence[str], stop_token_ids: Sequence[int]
) -> Generation:
    """Build the :class:`Generation` of raw sampled ids, cutting the text right after the first stop string.

    Shared by every backend so that all of them cut, classify and re-encode the same way.
    """
    if ids and ids[-1] in stop_token_ids:
        return Generation(decode(tokenizer, ids), ids, logprobs, "eos")
    text = decode(tokenizer, ids)
    end = find_stop(text, stop)
    if end < 0:
        return Generation(text, ids, logprobs, "length")
    # The shortest prefix of ids whose decoding reaches the stop string's end; backends stop right after
    # it, so walking back from the end takes one or two decodes.
    n = len(ids)
    while n > 1 and len(decode(tokenizer, ids[: n - 1])) >= end:
        n -= 1
    kept = decode(tokenizer, ids[:n])
    if len(kept) == end:
        return Generation(kept, ids[:n], logprobs[:n], "stop")
    head = ids[: n - 1]
    tail = tokenizer.encode(text[len(decode(tokenizer, head)) : end], add_special_tokens=False)
    return Generation(text[:end], head + tail, logprobs[: n - 1] + [math.nan] * len(tail), "stop", len(tail))
