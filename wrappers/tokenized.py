"""``TokenizedEnv``: the token-level view of a text env, with an exact per-token policy mask."""

from __future__ import annotations

import json
import threading
import unicodedata
import weakref
from collections import OrderedDict
from collections.abc import Callable
from itertools import pairwise
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Dict, Discrete, Sequence

from research_env.env import SearchPendingError
from research_env.protocol import ChunkKind, classify_chunk, find_lone_surrogate
from research_env.tokenizer import QWEN25_FIRST_ADDED_ID, qwen25_text_encoder
from wrappers.prefix import Prefix

#: What a byte-level tokenizer decodes an incomplete UTF-8 character to.
REPLACEMENT_CHAR = "\ufffd"


#: Env-written segments (prompts, result blocks) whose ids are kept, per tokenizer: the rollouts of a GRPO group
#: share their prompt and often their first searches. About 10 kB each.
SEGMENT_CACHE_SIZE = 1024


class TokenizationError(ValueError):
    """The tokenizer cannot represent the env's text exactly (e.g. it lower-cases or NFKC-normalises)."""


class _SegmentCache:
    """A small thread-safe LRU map (the sub-envs of a vector env step in threads) shared by every view of one
    tokenizer, from an env-written segment to its ids."""

    _by_tokenizer: weakref.WeakKeyDictionary[Any, _SegmentCache] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, size: int) -> None:
        self.size, self._items, self._item_lock = size, OrderedDict(), threading.Lock()

    @classmethod
    def of(cls, tokenizer: Any) -> _SegmentCache:
        with cls._lock:
            return cls._by_tokenizer.setdefault(tokenizer, cls(SEGMENT_CACHE_SIZE))

    def get(self, key: tuple[str, bool]) -> list[int] | None:
        with self._item_lock:
            ids = self._items.get(key)
            if ids is not None:
                self._items.move_to_end(key)
            return ids

    def put(self, key: tuple[str, bool], ids: list[int]) -> None:
        with self._item_lock:
            self._items[key] = ids
            if len(self._items) > self.size:
                self._items.popitem(last=False)


def _lossless_byte_level(tokenizer: Any) -> str | None:
    """How to prove ``decode(encode(text)) == text`` without decoding, or None where it can't be proved.

    A byte-level BPE (Qwen2.5's, GPT-2's, ours) maps text to UTF-8 bytes and the bytes to their printable
    stand-ins, merges only concatenate, and the decoder maps them back: encoding loses nothing once the
    normaliser leaves the text as it is and no added token swallows white space (``lstrip``/``rstrip``).
    Returns the normaliser's kind: ``""`` (none) or ``"NFC"`` (then the text must already be NFC).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "BPE" or backend.encode_special_tokens:
        return None
    states = [
        json.loads(part.__getstate__()) if part is not None else None
        for part in (backend.normalizer, backend.pre_tokenizer, backend.decoder)
    ]
    normalizer, pre_tokenizer, decoder = states
    steps = pre_tokenizer.get("pretokenizers", [pre_tokenizer]) if pre_tokenizer else []
    byte_level = [step for step in steps if step["type"] == "ByteLevel"]
    keeps_text = all(
        step["type"] == "ByteLevel"
        or (step["type"] == "Split" and step["behavior"] != "Removed")
        or step["type"] == "Digits"
        for step in steps
    )
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    if not (
        len(byte_level) == 1
        and not byte_level[0]["add_prefix_space"]
        and keeps_text
        and decoder is not None
        and decoder["type"] == "ByteLevel"
        and not any(token.lstrip or token.rstrip for token in added)
    ):
        return None
    if normalizer is None:
        return ""
    return "NFC" if normalizer["type"] == "NFC" else None


class TokenIds(Sequence):
    """Token id sequences over a vocabulary of ``vocab_size``. Unlike :class:`gymnasium.spaces.Sequence`,
    membership accepts lists, which is what tokenizers and generators hand around, and :class:`Prefix` views."""

    def __init__(self, vocab_size: int, seed: Any = None) -> None:
        super().__init__(Discrete(vocab_size), seed=seed)

    def contains(self, x: Any) -> bool:
        n = self.feature_space.n
        return isinstance(x, list | tuple | Prefix) and all(isinstance(i, int | np.integer) and 0 <= i < n for i in x)


class TokenizedEnv(gym.Wrapper[dict[str, Any], "list[int] | str", str, str], gym.utils.RecordConstructorArgs):
    """Observations as token ids with a loss mask; actions as the policy's sampled token ids.

    The observation is ``{"input_ids", "policy_mask", "text"}``: the ids of the whole context, 1 where the
    policy wrote a token and 0 where the env did (prompt, and each ``" <result>…</result>"`` block with its
    tags and leading space), and the inner env's transcript. Because the env only appends, ids are only
    appended too: the ids of step t are a prefix of those of step t+1, with no re-tokenisation drift.

    ``input_ids`` and ``policy_mask`` are read-only :class:`~wrappers.prefix.Prefix` views of lists that the view
    only appends to, so a step costs no copy of the context. They read like ``list[int]`` (indexing, slices and
    ``+`` give lists, they compare equal to lists, pickle and ``copy`` give lists, ``np.asarray`` works) and never
    change: a caller may keep any observation across later steps and resets, and it stays exactly what was
    returned. Take ``list(...)`` to get a list to change, and ``json.dumps(..., default=list)`` to write one.

    * An action of token ids is kept verbatim (EOS included). The env receives the decoding of the
      policy's tokens since the env last wrote, so decoding a policy run of ``input_ids`` gives exactly
      the text the env holds for it. A str action is tokenised first (so that it decodes back
      exactly; special-token strings such as the EOS become their tokens), then handled the same way.
    * Env-written text is tokenised one segment at a time, so no token straddles a policy/env boundary.
      The string of every added token (special or not: Qwen's ``<tool_call>`` is not special) is encoded
      as plain text in result blocks: retrieved passages never inject control tokens. Where the tokenizer's
      normaliser would change the text (Qwen2.5 applies NFC, so a decomposed "ñ" would come back composed),
      the text is encoded in pieces that it keeps as written; a tokenizer that changes text anyway raises
      :class:`TokenizationError`. Exactness is checked by decoding, except where it is proved (a byte-level
      BPE on text its normaliser keeps); env segments seen before (a GRPO group's prompt and repeated
      searches) reuse their ids from a cache shared by the views of one tokenizer. With Qwen2.5, text is
      encoded and decoded through its tiktoken ranks (the prompt's added tokens split out first, as the
      tokenizer does), which give the tokenizer's ids and text several times faster.
    * A failed search (the retriever raised, e.g. ``RetrieverUnavailable``): the policy's tokens stay and the
      env keeps the search pending (``env.unwrapped.pending_query``); ``step([])`` retries it, and the
      episode goes on as if it had never failed. Any other refused step leaves the view as it was.
    * Partial characters: a byte-level policy can end an action in the middle of a multi-byte UTF-8
      character. Its bytes stay in ``input_ids`` but its text is carried to the next step (the env only
      ever receives complete characters); while text is carried, enough of it is held back that the
      env never sees a chunk ending in ``</search>`` or EOS which the policy did not end there. The
      next action completes the character (or, if it can't be completed, delivers U+FFFD as decoded).
      Only a step the env truncates on its own budget can leave carried bytes out of ``text``, and so can
      a chunk longer than the env's whole budget, of which the env keeps only ``max_context_chars``.

    Example:
        >>> import gymnasium as gym, research_env
        >>> from research_env.tokenizer import build_qwen25_tokenizer
        >>> from wrappers import TokenizedEnv
        >>> tokenizer = build_qwen25_tokenizer(base=True)
        >>> env = TokenizedEnv(gym.make("ReSearch-MuSiQue-v0"), tokenizer)
        >>> obs, info = env.reset(seed=0)
        >>> sum(obs["policy_mask"]), len(obs["input_ids"]) == len(obs["policy_mask"])
        (0, True)
        >>> n = len(obs["input_ids"])
        >>> ids = tokenizer.encode("<think> ... </think><search> Polish-Russian War </search>")
        >>> obs, reward, terminated, truncated, info = env.step(ids)
        >>> obs["input_ids"][n : n + len(ids)] == ids, set(obs["policy_mask"][n : n + len(ids)])
        (True, {1})
        >>> obs["policy_mask"][-1], obs["text"].endswith("</result>")
        (0, True)
    """

    def __init__(self, env: gym.Env[str, str], tokenizer: Any) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.tokenizer = tokenizer
        vocab_size = len(tokenizer)
        self.observation_space = Dict(
            {"input_ids": TokenIds(vocab_size), "policy_mask": TokenIds(2), "text": env.observation_space}
        )
        self.action_space = TokenIds(vocab_size)
        normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
        self._normalize = normalizer.normalize_str if normalizer is not None else None
        self._lossless = _lossless_byte_level(tokenizer)
        # The Rust tokenizer behind a fast one, called directly (added tokens matched as transformers would).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = backend if backend is not None and not backend.encode_special_tokens else None
        # Every added token, special or not (Qwen's <tool_call> is not special): env text spells them out.
        added = getattr(tokenizer, "added_tokens_decoder", {})
        self._added_strings = sorted({token.content for token in added.values()})
        self._added_ids = frozenset(added)
        self._added_id_of = {token.content: i for i, token in added.items()}
        # Occurrences are found from their first character: one str.find per distinct first character ("<" for
        # Qwen) instead of one scan of the whole text per added token, then only the strings that also share the
        # next character ("<|" or "<t") are compared there.
        self._added_by_head: dict[str, dict[str, list[str]]] = {}
        for token in self._added_strings:
            if token:
                self._added_by_head.setdefault(token[0], {}).setdefault(token[:2], []).append(token)
        # The tokenizer splits added tokens out of the raw text (leftmost-longest) before it normalises and
        # pre-tokenises the rest, unless a token is matched on normalised text or swallows white space.
        self._splits_added_raw = not any(
            getattr(t, "normalized", True) or t.lstrip or t.rstrip or t.single_word for t in added.values()
        )
        self._cache = _SegmentCache.of(tokenizer)
        self._text_encoder: Callable[[str], list[int]] | None = None  # qwen25_text_encoder, found on first use
        self._found_text_encoder = False
        self._byte_decoder: Callable[[list[int]], str] | None = None  # see _find_byte_decoder, found on first use
        self._byte_ids: list[int] | None = None  # token id of each byte value, built when first needed
        self._input_ids: list[int] = []
        self._policy_mask: list[int] = []
        self._text = ""
        self._run: list[int] = []  # the policy's ids since the env last wrote
        self._run_text = ""  # the part of their decoding already sent to the env

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        text, info = self.env.reset(seed=seed, options=options)
        self._input_ids, self._policy_mask, self._text = [], [], ""
        self._run, self._run_text = [], ""
        # The prompt keeps its special tokens: a chat template writes them on purpose.
        self._append_env_text(text, plain=False)
        return self._observation(), info

    def step(self, action: list[int] | str) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        ids = self.encode_text(action) if isinstance(action, str) else list(map(int, action))
        vocab_size = self.action_space.feature_space.n
        if ids and (min(ids) < 0 or max(ids) >= vocab_size):
            unknown = [i for i in ids if not 0 <= i < vocab_size]
            raise ValueError(f"token ids must lie in [0, {vocab_size}), got {unknown}")
        pending = getattr(self.env.unwrapped, "pending_query", None)
        if pending is not None and ids:
            raise SearchPendingError(
                f"the search {pending!r} is still pending because the retriever failed: retry "
                "it with step([]), or reset()"
            )
        before = len(self._input_ids), len(self._run), self._run_text
        self._input_ids += ids
        self._policy_mask += [1] * len(ids)
        self._run += ids
        chunk = self._deliverable_text()
        try:
            text, reward, terminated, truncated, info = self.env.step(chunk)
        except Exception:
            if getattr(self.env.unwrapped, "pending_query", None) is None:  # the env did not take the chunk
                n, run, self._run_text = before
                del self._input_ids[n:], self._policy_mask[n:], self._run[run:]
            else:  # the env holds the chunk and waits for its search: step([]) retries it
                self._text += chunk
            raise
        self._text += chunk
        if truncated and len(text) < len(self._text) and self._text.startswith(text):
            self._text = text  # the env kept only the budget's worth of an over-long chunk; its ids all stay
        if not text.startswith(self._text):
            raise RuntimeError("the inner env rewrote its transcript; TokenizedEnv needs an append-only env")
        if len(text) > len(self._text):  # the env wrote a result block: the policy's run is over
            self._run, self._run_text = [], ""
            self._append_env_text(text[len(self._text) :], plain=True)
        return self._observation(), reward, terminated, truncated, info

    def encode_text(self, text: str, *, plain: bool = False) -> list[int]:
        """Token ids that decode to exactly ``text``. With ``plain`` (env-written text) the string of every added
        token, special or not, is spelled as ordinary text, so that passages never inject control tokens."""
        if (at := find_lone_surrogate(text)) >= 0:
            raise TokenizationError(
                f"the text holds a lone surrogate {text[at]!r} at {at}, which is not a character "
                "and cannot be tokenised; replace it (protocol.replace_lone_surrogates)"
            )
        cuts: set[int] = set()
        as_bytes: set[int] = set()  # positions of characters to write as their UTF-8 bytes' tokens
        if plain:
            for at, token in self._added_occurrences(text):  # a cut inside each keeps every piece free of it
                (cuts if len(token) > 1 else as_bytes).add(at + 1 if len(token) > 1 else at)
        ids, pieces = self._encode_pieces(text, cuts, as_bytes, plain)
        if self._is_exact(text, ids, pieces, plain):
            return ids
        if self._normalize is not None:
            # Cut wherever the normaliser would merge or reorder two neighbouring characters, and around each
            # character it changes on its own (NFC maps U+F900 to U+8C48), so that no piece it sees can change.
            # Those characters are written as their UTF-8 bytes' tokens, which no normaliser sees.
            changed = {i for i, char in enumerate(text) if self._normalize(char) != char}
            cuts |= {i for i in range(1, len(text)) if self._normalize(text[i - 1 : i + 1]) != text[i - 1 : i + 1]}
            ids, pieces = self._encode_pieces(text, cuts, as_bytes | changed, plain)
            if self._is_exact(text, ids, pieces, plain):
                return ids
        raise TokenizationError(
            f"{type(self.tokenizer).__name__} cannot encode {text[:80]!r}… so that it decodes "
            "back unchanged"
            + (" with every added token spelled as text" if plain else "")
            + "; use a tokenizer whose normaliser keeps text as written"
        )

    def _encode_pieces(
        self, text: str, cuts: set[int], as_bytes: set[int], plain: bool
    ) -> tuple[list[int], list[str] | None]:
        """Ids of ``text`` encoded piece by piece between ``cuts``, the characters at ``as_bytes`` as their bytes'
        tokens; and the pieces the tokenizer encoded (None if a character had no byte tokens)."""
        if not cuts and not as_bytes:
            return self._encode(text, plain), [text]
        bounds = sorted({0, len(text), *cuts, *as_bytes, *(i + 1 for i in as_bytes)})
        ids: list[int] = []
        pieces: list[str] | None = []
        for a, b in pairwise(bounds):
            if a in as_bytes:
                byte_ids = self._byte_tokens(text[a:b])
                ids += byte_ids
                pieces = pieces if byte_ids else None
            else:
                ids += self._encode(text[a:b], plain)
                pieces = None if pieces is None else [*pieces, text[a:b]]
        return ids, pieces

    def _is_exact(self, text: str, ids: list[int], pieces: list[str] | None, plain: bool) -> bool:
        """Whether ``ids`` decode to ``text`` (and, if ``plain``, hold no added token). Proved without decoding for
        a lossless byte-level BPE whose normaliser keeps each encoded piece (see :func:`_lossless_byte_level`)."""
        # Qwen2.5's text encoder knows no added token, so only other encoders' ids need the check.
        ordinary = self._text_encoder is not None and pieces is not None and self._all_nfc(pieces)
        if plain and not ordinary and not self._added_ids.isdisjoint(ids):
            return False
        proved = pieces is not None and (
            self._lossless == ""
            or (self._lossless == "NFC" and all(unicodedata.is_normalized("NFC", p) for p in pieces))
        )
        return proved or self._decode(ids) == text

    def _deliverable_text(self) -> str:
        """The next piece of the policy's text the env may see (see the class docstring)."""
        text = self._decode(self._run)
        if not text.startswith(self._run_text):
            raise TokenizationError(
                f"{type(self.tokenizer).__name__}.decode is not prefix-stable; "
                "TokenizedEnv needs a tokenizer whose decoding only grows with more ids"
            )
        sent = len(self._run_text)
        end = len(text.rstrip(REPLACEMENT_CHAR))
        if end < len(text):
            eos = self.env.unwrapped.eos_token
            while end > sent and classify_chunk(text[:end], eos) is not ChunkKind.CONTINUE:
                end -= 1
        self._run_text = text[:end]
        return text[sent:end]

    def _append_env_text(self, text: str, *, plain: bool) -> None:
        ids = self._cache.get((text, plain))
        if ids is None:
            ids = self.encode_text(text, plain=plain)
            self._cache.put((text, plain), ids)
        self._input_ids += ids
        self._policy_mask += [0] * len(ids)
        self._text += text

    def _encode(self, text: str, plain: bool) -> list[int]:
        """Ids of ``text``; ``plain`` text holds no added-token string (see :meth:`encode_text`)."""
        encoder = self._ordinary_encoder()
        if encoder is not None and unicodedata.is_normalized("NFC", text):
            # Qwen2.5's own encoder: the same ids (its NFC leaves this text as it is), 8x faster.
            if plain:
                return encoder(text)
            if self._splits_added_raw:  # as the tokenizer does: added tokens out first, then the text between
                ids: list[int] = []
                start = 0
                for at, token in self._leftmost_longest(text):
                    ids += encoder(text[start:at])
                    ids.append(self._added_id_of[token])
                    start = at + len(token)
                return ids + encoder(text[start:])
        if self._backend is not None:  # the same ids, without transformers' wrapping
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=False)["input_ids"]

    def _ordinary_encoder(self) -> Callable[[str], list[int]] | None:
        """:func:`qwen25_text_encoder` of the tokenizer, looked up once (it reads the vocabulary on first use)."""
        if not self._found_text_encoder:
            self._text_encoder, self._found_text_encoder = qwen25_text_encoder(self.tokenizer), True
        return self._text_encoder

    def _all_nfc(self, pieces: list[str]) -> bool:
        """Whether every piece is NFC, so that :meth:`_encode` gave it to the text encoder, not the tokenizer."""
        return all(unicodedata.is_normalized("NFC", piece) for piece in pieces)

    def _added_occurrences(self, text: str) -> list[tuple[int, str]]:
        """Every occurrence (start, string) of an added token's string in ``text``, overlapping ones included,
        in order of start."""
        found: list[tuple[int, str]] = []
        for first, by_head in self._added_by_head.items():
            at = text.find(first)
            while at >= 0:
                for head in (first, text[at : at + 2]) if first in by_head else (text[at : at + 2],):
                    found += [(at, token) for token in by_head.get(head, ()) if text.startswith(token, at)]
                at = text.find(first, at + 1)
        return sorted(found)

    def _leftmost_longest(self, text: str) -> list[tuple[int, str]]:
        """The added tokens that the tokenizer would split out of raw ``text``: leftmost first, the longest
        string at each start, none overlapping (Hugging Face's ``AddedVocabulary`` matching)."""
        chosen: list[tuple[int, str]] = []
        end = 0
        for at, token in self._added_occurrences(text):
            if chosen and chosen[-1][0] == at and len(token) > len(chosen[-1][1]):
                chosen[-1] = (at, token)  # the strings at one start are prefixes of each other: shortest first
                end = at + len(token)
            elif at >= end:
                chosen.append((at, token))
                end = at + len(token)
        return chosen

    def _byte_tokens(self, char: str) -> list[int]:
        """The byte-level tokens of ``char``'s UTF-8 bytes, or [] (then encode_text fails its check) when the
        vocabulary has no token for some byte: only byte-level BPEs (Qwen2.5's, ours) can spell any text."""
        if self._byte_ids is None:
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            byte_chars = bytes_to_unicode()  # the printable stand-in of each byte value in byte-level BPEs
            ids = self.tokenizer.convert_tokens_to_ids([byte_chars[b] for b in range(256)])
            unknown = self.tokenizer.unk_token_id
            self._byte_ids = ids if all(i is not None and i != unknown for i in ids) else []
        return [self._byte_ids[b] for b in char.encode("utf-8")] if self._byte_ids else []

    def _decode(self, ids: list[int]) -> str:
        if self._byte_decoder is None:
            self._byte_decoder = self._find_byte_decoder()
        return self._byte_decoder(ids)

    def _find_byte_decoder(self) -> Callable[[list[int]], str]:
        """Qwen2.5's decoding done by its tiktoken ranks (about 10x faster than the Rust tokenizer's, whose
        per-token strings it skips), where that provably decodes as the tokenizer does: a byte-level BPE whose
        ids are tiktoken's ranks (:func:`qwen25_text_encoder`), and added tokens whose ASCII strings decode as
        written; both join the bytes and replace invalid UTF-8 by maximal subparts. Else the tokenizer's own."""
        encoder = self._ordinary_encoder() if self._lossless is not None else None
        added = {i: token.encode("utf-8") for token, i in self._added_id_of.items()}
        if (
            encoder is None
            or not all(token.isascii() and self._slow_decode([i]) == token for token, i in self._added_id_of.items())
            or min(added, default=QWEN25_FIRST_ADDED_ID) < QWEN25_FIRST_ADDED_ID
        ):
            return self._slow_decode
        decode_bytes = encoder.__self__.decode_bytes  # the tiktoken.Encoding behind encode_ordinary

        def decode(ids: list[int]) -> str:
            if not ids or max(ids) < QWEN25_FIRST_ADDED_ID:
                return decode_bytes(ids).decode("utf-8", "replace")
            parts, start = [], 0
            for at in [at for at, i in enumerate(ids) if i >= QWEN25_FIRST_ADDED_ID]:
                parts += [decode_bytes(ids[start:at]), added[ids[at]]]
                start = at + 1
            parts.append(decode_bytes(ids[start:]))
            return b"".join(parts).decode("utf-8", "replace")

        return decode

    def _slow_decode(self, ids: list[int]) -> str:
        if self._backend is not None:  # what transformers' decode calls, without its per-id type conversion
            return self._backend.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _observation(self) -> dict[str, Any]:
        # Views, not copies: the lists only grow (a refused step cuts back only what it added, reset starts new
        # ones), so what a view shows never changes.
        return {"input_ids": Prefix(self._input_ids), "policy_mask": Prefix(self._policy_mask), "text": self._text}
