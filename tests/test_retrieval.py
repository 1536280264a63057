"""The embedded BM25 retriever on a real pyserini (Anserini/Lucene) index built from the real
Wikipedia sample: batched search, caching, bad corpora and pathological queries."""

from __future__ import annotations

import json
import shutil

import pytest

from research_env.retrieval import (
    BM25Retriever,
    CorpusFormatError,
    Retriever,
    build_bm25_index,
    cached_index,
    shared_retriever,
)
from research_env.retrieval.bm25 import corpus_fingerprint


@pytest.fixture(scope="module")
def wiki(shared_data, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("wiki") / "wiki.jsonl"
    shutil.copy(shared_data / "corpus/wiki18_sample1000.jsonl", corpus)
    return corpus, BM25Retriever.from_corpus(corpus)


def test_retriever_satisfies_the_protocol(wiki):
    _, retriever = wiki
    assert isinstance(retriever, Retriever)
    assert retriever.num_docs == 1000
    assert retriever.identity.startswith("bm25:")


def test_finds_the_passage_a_query_is_about(wiki):
    corpus, retriever = wiki
    docs = {d["id"]: d["contents"] for d in map(json.loads, corpus.open())}
    [hits] = retriever.search(["Evan Morris lobbyist Genentech Roche"], k=5)
    assert hits[0].id == "0" and hits[0].contents == docs["0"]
    assert len(hits) == 5 and all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_batched_search_equals_one_by_one(wiki):
    _, retriever = wiki
    queries = ["Evan Morris", "Washington lobbyist", "football club history", "river in Europe", "", "zzqqxx"]
    batched = retriever.search(queries, k=4)
    assert batched == [retriever.search([q], k=4)[0] for q in queries]
    assert batched[4] == [] and batched[5] == []


def test_pathological_queries_are_searched_not_crashed(wiki):
    corpus, retriever = wiki
    words = list(dict.fromkeys(w for line in corpus.open() for w in json.loads(line)["contents"].split()))
    assert len(retriever.search([" ".join(words[:5000])], k=3)[0]) == 3  # > Lucene's 1,024-clause default
    assert retriever.search(['AND OR ( [ { ^ " ~ * ? : \\ / +'], k=3) == [[]]  # no query syntax injection
    with pytest.raises(ValueError, match="k must be"):
        retriever.search(["x"], k=0)


def test_index_is_cached_by_corpus_contents(wiki, tmp_path):
    corpus, retriever = wiki
    assert cached_index(corpus) == retriever.index_dir
    copy = tmp_path / "copy.jsonl"
    shutil.copy(corpus, copy)
    assert corpus_fingerprint(copy) == corpus_fingerprint(corpus)
    assert cached_index(copy) == retriever.index_dir  # same contents: no rebuild
    copy.write_text(copy.read_text() + json.dumps({"id": "new", "contents": "extra"}) + "\n")
    assert corpus_fingerprint(copy) != corpus_fingerprint(corpus)


def test_bad_corpus_lines_are_reported_with_their_line(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": "1", "contents": "ok"}\n{"id": "2"}\n')
    with pytest.raises(CorpusFormatError, match="bad.jsonl:2"):
        build_bm25_index(corpus, tmp_path / "index", progress=False)
    assert not (tmp_path / "index").exists()  # no half-built index left behind
    with pytest.raises(FileNotFoundError, match="not a Lucene index"):
        BM25Retriever(tmp_path)


def test_one_shared_retriever_per_corpus():
    assert shared_retriever() is shared_retriever()
