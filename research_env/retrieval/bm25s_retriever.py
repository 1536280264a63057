"""An alternative in-process BM25 backend: ``bm25s`` (sparse matrices, numba top-k), no JVM.

Faster than Lucene per query on one machine (see benchmarks/retrieval.py) but its analyser differs
(Snowball stemmer, bm25s' English stop words), so scores and rankings are close to, not equal to,
pyserini's, which stays the default.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research_env.retrieval.base import Document, RetrieverError, check_k
from research_env.retrieval.bm25 import DEFAULT_B, DEFAULT_K1, cache_root, corpus_fingerprint
from research_env.retrieval.docstore import DocStore, read_corpus, write_docstore
from research_env.staging import build_once, staged_directory

_MARKER = "bm25s.research_env"


def _tokenize(texts: Sequence[str], **kwargs: Any) -> Any:
    import bm25s
    import Stemmer

    return bm25s.tokenize(
        list(texts), stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False, **kwargs
    )


def build_bm25s_index(
    corpus: str | os.PathLike, index_dir: str | os.PathLike, k1: float = DEFAULT_K1, b: float = DEFAULT_B
) -> Path:
    """Index a JsonCollection JSONL with bm25s (Lucene's BM25 variant) into ``index_dir``, atomically."""
    import bm25s

    index_dir = Path(index_dir)
    with staged_directory(index_dir) as staging:
        documents = list(read_corpus(corpus))
        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        model.index(_tokenize([contents for _, contents in documents]), show_progress=False)
        model.save(str(staging), show_progress=False)
        write_docstore(documents, staging)
        (staging / _MARKER).touch()
    return index_dir


class BM25SRetriever:
    """bm25s over an index built by :func:`build_bm25s_index`; returns only documents that match a term
    (score > 0), like Lucene."""

    def __init__(self, index_dir: str | os.PathLike, threads: int = 0) -> None:
        import bm25s

        self.index_dir = Path(index_dir)
        if not (self.index_dir / _MARKER).is_file():
            raise FileNotFoundError(
                f"{self.index_dir} is not a bm25s index; build one with "
                "`python scripts/build_index.py --corpus JSONL --index DIR --backend bm25s`"
            )
        self._model = bm25s.BM25.load(str(self.index_dir), mmap=True)
        self._model.backend = "numba"
        self.docs = DocStore(self.index_dir)
        self.num_docs = len(self.docs)
        self.threads = threads
        self._compile()

    def _compile(self) -> None:
        """Run one search now: numba compiles bm25s' kernels on the first call (about 10 s on 2 cores), which
        belongs to loading the index, not to the first request (it outlasted request timeouts)."""
        if self._model.vocab_dict:
            term = next(iter(self._model.vocab_dict))
            self._model.retrieve([[term]], k=1, show_progress=False, n_threads=self.threads)

    @classmethod
    def from_corpus(cls, corpus: str | os.PathLike, **kwargs: Any) -> BM25SRetriever:
        """Index ``corpus`` into the cache on first use, then load it."""
        index_dir = cache_root() / "indexes" / f"bm25s-{corpus_fingerprint(corpus)}"
        return cls(build_once(index_dir, lambda target: build_bm25s_index(corpus, target)), **kwargs)

    @property
    def identity(self) -> str:
        return f"bm25s:{self.index_dir.name}:k1={self._model.k1}:b={self._model.b}"

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        check_k(k)
        if not queries:
            return []
        results: list[list[Document]] = [[] for _ in queries]
        try:
            tokens = _tokenize(queries, return_ids=False)
            # A query of stopwords only has no terms: it matches nothing, as in Lucene (bm25s would raise).
            asked = [i for i, terms in enumerate(tokens) if terms]
            if not asked:
                return results
            rows, scores = self._model.retrieve(
                [tokens[i] for i in asked], k=min(int(k), self.num_docs), show_progress=False, n_threads=self.threads
            )
        except Exception as e:  # bm25s raises ValueError/numba errors for anything that fails inside
            raise RetrieverError(f"bm25s search failed in {self.index_dir}: {e}") from e
        for i, row_ids, row_scores in zip(asked, rows, scores, strict=True):
            results[i] = [self.docs.document(r, s) for r, s in zip(row_ids, row_scores, strict=True) if s > 0]
        return results
