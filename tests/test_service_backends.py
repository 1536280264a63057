"""The other pieces a service is built from: the bm25s backend, the LRU cache, and the retriever spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research_env.assets import DEMO_CORPUS
from research_env.retrieval import BM25Retriever, Retriever, cached_index
from research_env.retrieval.cache import CachedRetriever
from research_env.retrieval.spec import RetrieverSpec

WIKI = [
    ("d1", '"Paris"\nParis is the capital and largest city of France.'),
    ("d2", '"Lyon"\nLyon is the third-largest city of France, on the Rhone.'),
    ("d3", '"Berlin"\nBerlin is the capital of Germany.'),
    ("d4", '"Nile"\nThe Nile is a river in north-eastern Africa.'),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "wiki.jsonl"
    path.write_text("".join(json.dumps({"id": i, "contents": c}) + "\n" for i, c in WIKI))
    return path


def test_bm25s_finds_what_lucene_finds(corpus):
    pytest.importorskip("bm25s")
    bm25s_retriever = RetrieverSpec(backend="bm25s", corpus=str(corpus)).build()
    lucene = BM25Retriever.from_corpus(corpus)
    assert isinstance(bm25s_retriever, Retriever) and bm25s_retriever.num_docs == 4
    queries = ["capital of France", "river in Africa", "Germany's capital city", "the", "zzzz unknown"]
    got, want = bm25s_retriever.search(queries, 2), lucene.search(queries, 2)
    assert [r[0].id for r in got[:3]] == [r[0].id for r in want[:3]] == ["d1", "d4", "d3"]
    assert got[3] == got[4] == []  # stop words and unknown words match nothing, as in Lucene
    assert bm25s_retriever.search([], 3) == []
    # a batch of stop words only used to make bm25s raise: it matches nothing, as Lucene's does
    assert bm25s_retriever.search(["a", "the of"], 2) == lucene.search(["a", "the of"], 2) == [[], []]


def test_cache_answers_repeats_from_memory_keyed_by_query_and_k():
    class Counting:
        identity = "counting"

        def __init__(self) -> None:
            self.inner, self.seen = BM25Retriever(cached_index(DEMO_CORPUS, progress=False)), []

        def search(self, queries, k):
            self.seen.append(list(queries))
            return self.inner.search(queries, k)

    backend = Counting()
    cache = CachedRetriever(backend, max_entries=3)
    first = cache.search(["Paris", "Berlin", "Paris"], 2)
    assert backend.seen == [["Paris", "Berlin"]] and first[0] == first[2] == backend.inner.search(["Paris"], 2)[0]
    assert cache.search(["Berlin", "Paris"], 2) == [first[1], first[0]] and len(backend.seen) == 1
    cache.search(["Paris"], 3)  # another k is another entry
    assert backend.seen[-1] == ["Paris"] and cache.hits == 2 and cache.misses == 3
    cache.search(["Nile"], 2)  # evicts the least recently used entry: ("Berlin", 2)
    cache.search(["Berlin"], 2)
    assert backend.seen[-1] == ["Berlin"]


def test_cache_never_stores_a_failure():
    class Flaky:
        identity = "flaky"
        fail = True

        def search(self, queries, k):
            if self.fail:
                raise RuntimeError("down")
            return [[] for _ in queries]

    flaky = Flaky()
    cache = CachedRetriever(flaky)
    with pytest.raises(RuntimeError):
        cache.search(["q"], 1)
    flaky.fail = False
    assert cache.search(["q"], 1) == [[]] and cache.misses == 1


def test_spec_rejects_incomplete_recipes(corpus, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        RetrieverSpec(index=str(tmp_path), corpus=str(corpus))
    with pytest.raises(ValueError, match="needs model="):
        RetrieverSpec(backend="dense", corpus=str(corpus))
    with pytest.raises(ValueError, match="backend must be"):
        RetrieverSpec(backend="tfidf", corpus=str(corpus))
    with pytest.raises(FileNotFoundError):
        RetrieverSpec(corpus=str(tmp_path / "missing.jsonl"))
    assert RetrieverSpec(corpus=str(DEMO_CORPUS)).build().num_docs == 4431
