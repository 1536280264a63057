"""A Gymnasium ``Text`` space for transcripts: any Unicode string, empty allowed.

Gymnasium's ``Text`` only contains strings over its charset, and its shared-memory layout stores
charset indices, so ``AsyncVectorEnv(shared_memory=True)`` silently drops every other character
(accents, CJK, emoji). We register a layout for :class:`UnicodeText` that stores code points instead:
observations cross process boundaries exactly, with either vector-env memory mode.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import shared_memory as _shm

#: Characters used when *sampling* (e.g. by ``check_env``); membership accepts any string.
SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n" + "éü–—·中文"
_PAD = -1  # code point 0 is a valid character, so padding is -1


class UnicodeText(Text):
    """Strings of any Unicode characters with ``min_length <= len(s) <= max_length``."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, UnicodeText) and (other.min_length, other.max_length) == (
            self.min_length, self.max_length)

    __hash__ = Text.__hash__


@_shm.create_shared_memory.register(UnicodeText)
def _create(space: UnicodeText, n: int = 1, ctx: Any = _shm.mp) -> Any:
    return ctx.Array(np.dtype(np.int32).char, n * space.max_length)


@_shm.write_to_shared_memory.register(UnicodeText)
def _write(space: UnicodeText, index: int, value: str, shared_memory: Any) -> None:
    if len(value) > space.max_length:
        raise ValueError(f"a text of {len(value)} characters does not fit the shared-memory slot of "
                         f"{space.max_length}; raise the env's max_context_chars or use shared_memory=False")
    slot = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)[index * space.max_length:(index + 1) *
                                                                   space.max_length]
    codes = np.frombuffer(value.encode("utf-32-le", "surrogatepass"), dtype=np.int32)
    slot[: len(codes)] = codes
    slot[len(codes):] = _PAD


@_shm.read_from_shared_memory.register(UnicodeText)
def _read(space: UnicodeText, shared_memory: Any, n: int = 1) -> tuple[str, ...]:
    rows = np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape(n, space.max_length)
    texts = []
    for row in rows:
        end = np.flatnonzero(row == _PAD)
        codes = row[: end[0]] if len(end) else row
        texts.append(codes.astype("<i4").tobytes().decode("utf-32-le", "surrogatepass"))
    return tuple(texts)
