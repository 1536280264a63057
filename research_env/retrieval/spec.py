"""A picklable recipe for a retriever (backend + index or corpus + model), so that the CLI, each Ray Serve
replica and each benchmark process can build the same retriever where it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from research_env.retrieval.base import Retriever

BACKENDS = ("bm25", "bm25s", "dense")


@dataclass(frozen=True)
class RetrieverSpec:
    """``index`` (a built index directory) or ``corpus`` (a JSONL indexed into the cache on first use).
    ``model`` is the local sentence-transformers directory for ``dense`` (optional with a dense ``index``,
    which records its model); ``dense_kind`` is ``flat`` or ``hnsw``. ``threads``: Java threads of one batched
    pyserini call (0: one per CPU), which is how a single-caller JVM index uses the machine's cores."""

    backend: str = "bm25"
    index: str | None = None
    corpus: str | None = None
    model: str | None = None
    dense_kind: str = "flat"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if (self.index is None) == (self.corpus is None):
            raise ValueError("give exactly one of index= (a built index directory) or corpus= (a JSONL file)")
        if self.backend == "dense" and self.corpus is not None and self.model is None:
            raise ValueError("a dense retriever over a corpus needs model= (a local sentence-transformers path)")
        for path in (self.index, self.corpus, self.model):
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(f"{path} does not exist")

    def build(self) -> Retriever:
        if self.backend == "bm25":
            from research_env.retrieval.bm25 import BM25Retriever

            threads = self.threads or os.cpu_count() or 1
            if self.index:
                return BM25Retriever(self.index, threads=threads)
            return BM25Retriever.from_corpus(self.corpus, threads=threads)
        if self.backend == "bm25s":
            from research_env.retrieval.bm25s_retriever import BM25SRetriever

            return BM25SRetriever(self.index) if self.index else BM25SRetriever.from_corpus(self.corpus)
        from research_env.retrieval.dense import DenseRetriever

        if self.index:
            return DenseRetriever(self.index, model_path=self.model)
        return DenseRetriever.from_corpus(self.corpus, self.model, kind=self.dense_kind)
