"""Retrieval: the :class:`Retriever` protocol, the embedded BM25 backend, and one shared retriever
per corpus per process (all envs of a process search through the same index and JVM)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from research_env.retrieval.base import Document, Retriever, RetrieverError
from research_env.retrieval.batcher import MicroBatcher
from research_env.retrieval.bm25 import BM25Retriever, build_bm25_index, cached_index
from research_env.retrieval.cache import CachedRetriever
from research_env.retrieval.docstore import CorpusFormatError
from research_env.retrieval.jvm_signals import reclaim_jvm_signal_handlers

__all__ = [
    "BM25Retriever",
    "CachedRetriever",
    "CorpusFormatError",
    "Document",
    "MicroBatcher",
    "Retriever",
    "RetrieverError",
    "build_bm25_index",
    "cached_index",
    "reclaim_jvm_signal_handlers",
    "shared_retriever",
]

_SHARED: dict[Path, BM25Retriever] = {}
_LOCK = threading.Lock()


def shared_retriever(corpus: str | os.PathLike | None = None) -> BM25Retriever:
    """The process-wide BM25 retriever of a corpus (default: the shipped demo corpus)."""
    from research_env.assets import DEMO_CORPUS

    path = Path(corpus or DEMO_CORPUS).resolve()
    with _LOCK:
        if path not in _SHARED:
            _SHARED[path] = BM25Retriever.from_corpus(path)
        return _SHARED[path]
