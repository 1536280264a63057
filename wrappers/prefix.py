"""``Prefix``: a read-only view of the first items of an append-only list, so that an observation of a growing
context costs O(1) per step instead of a copy of the whole context."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any, SupportsIndex, overload

import numpy as np


class Prefix(Sequence[int]):
    """The first ``n`` items of ``items``, a list that its owner only ever appends to (or cuts back to at least
    ``n`` items), so the view never changes: a caller may keep it as long as it likes.

    It reads like the list it stands for: ``len``, indexing, iteration and ``in``; a slice, ``+`` and ``list()``
    give a new ``list[int]``; it compares equal to a list (or another view) of the same items; ``pickle`` and
    ``copy`` turn it into a plain list (so vector envs' workers and Ray send lists); ``np.asarray`` builds an
    array. It cannot be changed in place (no ``append``, no item assignment): copy it with ``list()`` for that.
    Not a ``list`` subclass, so ``json.dumps`` needs ``default=list``.
    """

    __slots__ = ("_items", "_n")

    def __init__(self, items: list[int], n: int | None = None) -> None:
        self._items = items
        self._n = len(items) if n is None else n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> int | list[int]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step == 1:
                return self._items[start:stop]
            return self._items[: self._n][index]
        i = index.__index__()
        if not -self._n <= i < self._n:
            raise IndexError("Prefix index out of range")
        return self._items[i if i >= 0 else self._n + i]

    def __iter__(self) -> Iterator[int]:
        return islice(self._items, self._n)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Prefix):
            other = other._items[: other._n]
        if not isinstance(other, list):
            return NotImplemented
        return len(other) == self._n and self._items[: self._n] == other

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so unhashable like one

    def __add__(self, other: Sequence[int]) -> list[int]:
        return self._items[: self._n] + list(other)

    def __radd__(self, other: Sequence[int]) -> list[int]:
        return list(other) + self._items[: self._n]

    def __repr__(self) -> str:
        return repr(self._items[: self._n])

    def __reduce__(self) -> tuple[type, tuple[list[int]]]:
        return list, (self._items[: self._n],)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.array(self._items[: self._n], dtype=dtype)
