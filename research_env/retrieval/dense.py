"""Dense retrieval, the paper's setting (E5 over Wikipedia): a sentence-transformers encoder loaded from a
local path and a faiss index (exact inner-product ``flat``, or ``hnsw`` for large corpora).

Embeddings are L2-normalised, so inner product is cosine similarity. An index directory holds
``index.faiss``, the document store and ``research_env.json`` (model, kind, prefixes), so that serving it
needs nothing but the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from research_env.retrieval.base import Document, RetrieverError, check_k
from research_env.retrieval.bm25 import cache_root, corpus_fingerprint
from research_env.retrieval.docstore import DocStore, read_corpus, write_docstore
from research_env.staging import build_once, staged_directory

INDEX_KINDS = ("flat", "hnsw")
_INDEX_FILE, _META_FILE, _FORMAT = "index.faiss", "research_env.json", "faiss-dense-v1"
#: HNSW graph degree and build effort: faiss' usual recall/speed trade-off for 10^5–10^7 vectors.
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 200, 128


class DenseIndexError(RetrieverError):
    """A dense index directory is missing files or was built with another format."""


def encoding_prefixes(model_path: str | os.PathLike) -> tuple[str, str]:
    """The (query, passage) prefixes a model was trained with: the prompts its sentence-transformers config
    declares, else E5's ``"query: "``/``"passage: "`` when its name says e5, else none."""
    path = Path(model_path)
    config = path / "config_sentence_transformers.json"
    if config.is_file():
        prompts = json.loads(config.read_text()).get("prompts") or {}
        if "query" in prompts:
            return prompts["query"], prompts.get("passage", prompts.get("document", ""))
    if re.search(r"(^|[^a-z0-9])e5([^a-z0-9]|$)", path.name.lower()):
        return "query: ", "passage: "
    return "", ""


class DenseEncoder:
    """A sentence-transformers model from a local directory (never the hub), with its prefixes."""

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.model_path} is not a local model directory (no config.json); pass the "
                "path of a downloaded sentence-transformers model, e.g. e5-base-v2"
            )
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True)
        self.query_prefix, self.passage_prefix = encoding_prefixes(self.model_path)
        self.batch_size = batch_size
        # sentence-transformers 5 renamed get_sentence_embedding_dimension (deprecated since)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self._encode([self.query_prefix + q for q in queries])

    def encode_passages(self, passages: Sequence[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + p for p in passages])

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def new_faiss_index(dim: int, kind: str) -> Any:
    """An empty inner-product index of ``kind`` (``flat`` exact, ``hnsw`` approximate)."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index
    raise ValueError(f"dense index kind must be one of {INDEX_KINDS}, got {kind!r}")


def build_dense_index(
    corpus: str | os.PathLike,
    index_dir: str | os.PathLike,
    model_path: str | os.PathLike,
    kind: str = "flat",
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    encoder: DenseEncoder | None = None,
) -> Path:
    """Encode a JsonCollection JSONL in batches into a faiss index at ``index_dir`` (built in a temporary
    sibling and renamed into place, so a reader never sees half an index). Pass ``encoder`` to reuse a
    loaded model of ``model_path``."""
    import faiss
    from tqdm.auto import tqdm

    encoder = encoder or DenseEncoder(model_path, device=device)
    index = new_faiss_index(encoder.dim, kind)
    index_dir = Path(index_dir)
    with staged_directory(index_dir) as staging:

        def documents() -> Iterator[tuple[str, str]]:
            with tqdm(desc=f"dense index {Path(corpus).name}", unit="doc", disable=not progress) as bar:
                docs = read_corpus(corpus)
                while batch := list(islice(docs, batch_size)):
                    index.add(encoder.encode_passages([contents for _, contents in batch]))
                    bar.update(len(batch))
                    yield from batch

        num_docs = write_docstore(documents(), staging)
        faiss.write_index(index, str(staging / _INDEX_FILE))
        meta = {
            "format": _FORMAT,
            "kind": kind,
            "model": str(Path(model_path).resolve()),
            "dim": encoder.dim,
            "num_docs": num_docs,
            "query_prefix": encoder.query_prefix,
            "corpus": str(Path(corpus).resolve()),
        }
        (staging / _META_FILE).write_text(json.dumps(meta, indent=1))
    return index_dir


def cached_dense_index(
    corpus: str | os.PathLike, model_path: str | os.PathLike, kind: str = "flat", progress: bool = True
) -> Path:
    """The dense index of (corpus, model, kind) in the cache, built on first use (one builder at a time across
    processes)."""
    model_key = hashlib.sha256(str(Path(model_path).resolve()).encode()).hexdigest()[:8]
    index_dir = cache_root() / "indexes" / f"dense-{kind}-{corpus_fingerprint(corpus)}-{model_key}"
    return build_once(
        index_dir, lambda target: build_dense_index(corpus, target, model_path, kind=kind, progress=progress)
    )


class DenseRetriever:
    """faiss + sentence-transformers over an index built by :func:`build_dense_index`.

    ``model_path`` overrides the model recorded in the index (e.g. after moving it); it must be the same
    model, or the scores are meaningless; so must a loaded ``encoder`` passed to share one model between
    indexes. Empty queries get no documents, as with BM25.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike,
        model_path: str | os.PathLike | None = None,
        device: str = "cpu",
        ef_search: int = HNSW_EF_SEARCH,
        encoder: DenseEncoder | None = None,
    ) -> None:
        import faiss

        self.index_dir = Path(index_dir)
        meta_path = self.index_dir / _META_FILE
        if not (self.index_dir / _INDEX_FILE).is_file() or not meta_path.is_file():
            raise DenseIndexError(
                f"{self.index_dir} is not a dense index; build one with "
                "`python scripts/build_index.py --corpus JSONL --index DIR --dense MODEL_PATH`"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != _FORMAT:
            raise DenseIndexError(
                f"{self.index_dir} has format {self.meta.get('format')!r}, expected {_FORMAT!r}; "
                "rebuild it with scripts/build_index.py"
            )
        self.encoder = encoder or DenseEncoder(model_path or self.meta["model"], device=device)
        if self.encoder.dim != self.meta["dim"]:
            raise DenseIndexError(
                f"model {self.encoder.model_path} embeds in {self.encoder.dim} dimensions, the "
                f"index in {self.meta['dim']}: serve the index with the model that built it"
            )
        self.index = faiss.read_index(str(self.index_dir / _INDEX_FILE))
        if self.meta["kind"] == "hnsw":
            self.index.hnsw.efSearch = ef_search
        self.docs = DocStore(self.index_dir)
        self.num_docs = len(self.docs)

    @classmethod
    def from_corpus(
        cls, corpus: str | os.PathLike, model_path: str | os.PathLike, kind: str = "flat", **kwargs: Any
    ) -> DenseRetriever:
        return cls(cached_dense_index(corpus, model_path, kind), model_path=model_path, **kwargs)

    @property
    def identity(self) -> str:
        return f"dense:{self.index_dir.name}:{self.meta['kind']}:{self.encoder.model_path.name}"

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        check_k(k)
        results: list[list[Document]] = [[] for _ in queries]
        pending = [i for i, q in enumerate(queries) if q.strip()]
        if not pending:
            return results
        try:
            scores, rows = self.index.search(
                self.encoder.encode_queries([queries[i] for i in pending]), min(int(k), self.num_docs)
            )
        except Exception as e:  # faiss and torch raise RuntimeError for anything that fails inside
            raise RetrieverError(f"dense search failed in {self.index_dir}: {e}") from e
        for i, row_scores, row_ids in zip(pending, scores, rows, strict=True):
            results[i] = [self.docs.document(r, s) for r, s in zip(row_ids, row_scores, strict=True) if r >= 0]
        return results
