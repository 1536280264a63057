"""The retriever contract (SPEC §4): a batched ``search(queries, k)`` returning scored documents.

Every backend (embedded BM25, HTTP client, dense) implements it, so envs, agents and the service
never care which one is behind a search call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Document:
    """A retrieved passage. ``contents`` is the JsonCollection text, ``"Title"\\ntext``."""

    id: str
    contents: str
    score: float


def check_k(k: int) -> None:
    """Every backend's contract on ``k``: asking for no documents is a caller's bug, not an empty result."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


class RetrieverError(RuntimeError):
    """A retriever could not answer; never replaced by an empty result."""


@runtime_checkable
class Retriever(Protocol):
    """Batched retrieval. ``identity`` names the index (and its settings) so that caches and traces
    can tell two indexes apart."""

    @property
    def identity(self) -> str: ...

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        """Top-``k`` documents for each query, best first; one list per query, in order."""
        ...
