"""A Gymnasium ``Text`` space for transcripts: any Unicode string, empty allowed.

Gymnasium's ``Text`` only contains strings over its charset, so it would reject accents, CJK or emoji
in questions and passages. And ``AsyncVectorEnv(shared_memory=True)`` cannot carry Text at all: it reads
the shared buffer once, when it is built, and for Text that read is a tuple of strings, not a view, so
every later observation would be the empty initial one. We refuse that mode with a clear error.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.error import CustomSpaceError
from gymnasium.spaces import Text
from gymnasium.vector.utils import shared_memory as _shm

#: Characters used when *sampling* (e.g. by ``check_env``); membership accepts any string.
SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n" + "éü–—·中文"


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
            self.min_length,
            self.max_length,
        )

    __hash__ = Text.__hash__


@_shm.create_shared_memory.register(UnicodeText)
def _refuse_shared_memory(space: UnicodeText, n: int = 1, ctx: Any = None) -> Any:
    raise CustomSpaceError(
        "ReSearch observations are text, and AsyncVectorEnv(shared_memory=True) would return the initial "
        "observation forever (it reads a Text buffer once, as a copy). "
        "Use AsyncVectorEnv(..., shared_memory=False), or gym.make_vec(..., vectorization_mode='async', "
        "vector_kwargs={'shared_memory': False})."
    )
