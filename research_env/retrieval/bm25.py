"""The embedded default retriever: Lucene BM25 through pyserini's Anserini, in process.

We call Anserini's ``SimpleSearcher``/``SimpleIndexer`` (the classes pyserini's ``LuceneSearcher``
and ``LuceneIndexer`` wrap) through pyserini's own JVM bridge: importing ``pyserini.search.lucene``
also imports torch, transformers and scikit-learn (about 10 s per process, paid again by every
worker of a vector env), while the Java classes load in a fraction of a second. The index of a corpus
is built on first use into a cache directory keyed by the corpus contents, then reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research_env.retrieval.base import Document, RetrieverError, check_k
from research_env.retrieval.docstore import iter_corpus_lines
from research_env.retrieval.jvm import ensure_jvm
from research_env.retrieval.jvm_signals import reclaim_jvm_signal_handlers
from research_env.staging import build_once, staged_directory

#: Anserini's BM25 defaults (pyserini's LuceneSearcher uses the same).
DEFAULT_K1, DEFAULT_B = 0.9, 0.4
#: Lucene rejects a query of more than 1,024 clauses (one per distinct term) by default. We cut queries
#: to this many words and raise Lucene's limit to MAX_CLAUSES, since one word may analyse into several
#: terms ("a/b/c"): a pathological query is searched, not turned into an error.
MAX_QUERY_WORDS = 1000
MAX_CLAUSES = 1 << 16
_FINGERPRINT_CHUNK = 1 << 20
_INDEX_FORMAT = "anserini-bm25-v1"  # bump when the index settings below change


def cache_root() -> Path:
    """Where built indexes live: ``$RESEARCH_ENV_CACHE`` or ``~/.cache/research_env``."""
    return Path(os.environ.get("RESEARCH_ENV_CACHE", Path.home() / ".cache" / "research_env"))


def corpus_fingerprint(corpus: str | os.PathLike) -> str:
    """A content key for a corpus file that stays cheap for a 13 GB Wikipedia dump: its size plus a
    hash of its first and last MiB."""
    path = Path(corpus)
    size = path.stat().st_size
    digest = hashlib.sha256(f"{_INDEX_FORMAT}:{size}".encode())
    with path.open("rb") as f:
        digest.update(f.read(_FINGERPRINT_CHUNK))
        if size > _FINGERPRINT_CHUNK:
            f.seek(max(_FINGERPRINT_CHUNK, size - _FINGERPRINT_CHUNK))
            digest.update(f.read())
    return digest.hexdigest()[:20]


def build_bm25_index(
    corpus: str | os.PathLike,
    index_dir: str | os.PathLike,
    threads: int = 2,
    batch_size: int = 2048,
    progress: bool = True,
) -> Path:
    """Index a JsonCollection JSONL into ``index_dir`` (raw documents stored, so hits carry their text).

    The index is written to a temporary sibling and renamed into place, so a reader never sees a
    half-built index.
    """
    from tqdm.auto import tqdm

    corpus, index_dir = Path(corpus), Path(index_dir)
    if not corpus.is_file():
        raise FileNotFoundError(f"corpus {corpus} does not exist")
    ensure_jvm()
    from jnius import autoclass

    with staged_directory(index_dir) as staging:
        args = [
            "-index",
            str(staging),
            "-input",
            "",
            "-collection",
            "JsonCollection",
            "-threads",
            str(threads),
            "-storeRaw",
        ]
        indexer = autoclass("io.anserini.index.SimpleIndexer")(args)
        batch: list[str] = []
        with tqdm(
            total=corpus.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"BM25 index {corpus.name}",
            disable=not progress,
        ) as bar:
            for raw, _ in iter_corpus_lines(corpus):
                batch.append(raw.decode("utf-8"))
                bar.update(len(raw))
                if len(batch) >= batch_size:
                    indexer.addRawDocuments(batch)
                    batch = []
            if batch:
                indexer.addRawDocuments(batch)
        indexer.close()
        (staging / "research_env.json").write_text(
            json.dumps({"corpus": str(corpus.resolve()), "format": _INDEX_FORMAT})
        )
    return index_dir


def cached_index(corpus: str | os.PathLike, threads: int = 2, progress: bool = True) -> Path:
    """The BM25 index of ``corpus`` in the cache, built on first use (one builder at a time across
    processes)."""
    index_dir = cache_root() / "indexes" / f"bm25-{corpus_fingerprint(corpus)}"
    return build_once(index_dir, lambda target: build_bm25_index(corpus, target, threads=threads, progress=progress))


class BM25Retriever:
    """Lucene BM25 over a prebuilt index. Use :meth:`from_corpus` to index a JSONL corpus on first use."""

    def __init__(
        self, index_dir: str | os.PathLike, k1: float = DEFAULT_K1, b: float = DEFAULT_B, threads: int = 1
    ) -> None:
        self.index_dir = Path(index_dir)
        if not any(self.index_dir.glob("segments_*")):
            raise FileNotFoundError(f"{self.index_dir} is not a Lucene index (build one with scripts/build_index.py)")
        ensure_jvm()
        from jnius import autoclass

        autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(MAX_CLAUSES)
        self._searcher = autoclass("io.anserini.search.SimpleSearcher")(str(self.index_dir))
        self._searcher.set_bm25(float(k1), float(b))
        self._array_list = autoclass("java.util.ArrayList")
        self.k1, self.b, self.threads = k1, b, threads
        self.num_docs = int(self._searcher.get_total_num_docs())

    @classmethod
    def from_corpus(cls, corpus: str | os.PathLike, **kwargs: Any) -> BM25Retriever:
        return cls(cached_index(corpus), **kwargs)

    @property
    def identity(self) -> str:
        return f"bm25:{self.index_dir.name}:k1={self.k1}:b={self.b}"

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        check_k(k)
        texts = [" ".join(q.split()[:MAX_QUERY_WORDS]) for q in queries]
        results: list[list[Document]] = [[] for _ in texts]
        pending = [i for i, q in enumerate(texts) if q]  # an empty query matches nothing: skip the JVM
        reclaim_jvm_signal_handlers()  # ray.init may have taken the signals Lucene's JVM relies on
        try:
            if len(pending) == 1:
                i = pending[0]
                results[i] = self._documents(self._searcher.search(texts[i], int(k)))
            elif pending:
                java_queries, java_ids = self._array_list(), self._array_list()
                for i in pending:
                    java_queries.add(texts[i])
                    java_ids.add(str(i))
                hits = self._searcher.batch_search(java_queries, java_ids, int(k), int(self.threads))
                for i in pending:
                    results[i] = self._documents(hits.get(str(i)))
        except Exception as e:  # jnius raises JavaException for anything that fails in Lucene
            raise RetrieverError(f"BM25 search failed in {self.index_dir}: {e}") from e
        return results

    @staticmethod
    def _documents(hits: Any) -> list[Document]:
        documents = []
        for hit in hits or ():
            raw = json.loads(hit.lucene_document.get("raw"))
            documents.append(Document(id=str(hit.docid), contents=raw["contents"], score=float(hit.score)))
        return documents
