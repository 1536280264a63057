"""An LRU cache in front of any retriever, keyed by (index identity, query, k).

GRPO samples several rollouts per prompt and they often issue the same first query; a cache answers
those from memory. Misses of one call go to the backend as one batched call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from research_env.retrieval.base import Document, Retriever


class CachedRetriever:
    """Wraps a :class:`Retriever` and is one. Thread-safe; failures are never cached.

    Example:
        >>> retriever = CachedRetriever(shared_retriever(), max_entries=100_000)
        >>> retriever.search(["who wrote hamlet"], 5)  # miss: asks the index
        >>> retriever.search(["who wrote hamlet"], 5)  # hit
    """

    def __init__(self, retriever: Retriever, max_entries: int = 65_536) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.retriever, self.max_entries = retriever, max_entries
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple[str, str, int], list[Document]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self.retriever.identity

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        identity = self.retriever.identity
        keys = [(identity, q, k) for q in queries]
        results: list[list[Document] | None] = [None] * len(keys)
        with self._lock:
            for i, key in enumerate(keys):
                if key in self._entries:
                    self._entries.move_to_end(key)
                    results[i] = self._entries[key]
            self.hits += sum(r is not None for r in results)
        missing = list(dict.fromkeys(q for q, r in zip(queries, results, strict=True) if r is None))
        if missing:
            fetched = dict(zip(missing, self.retriever.search(missing, k), strict=True))
            with self._lock:
                self.misses += len(missing)
                for q, docs in fetched.items():
                    self._entries[(identity, q, k)] = docs
                    self._entries.move_to_end((identity, q, k))
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            results = [fetched[q] if r is None else r for q, r in zip(queries, results, strict=True)]
        return [list(r) for r in results]
