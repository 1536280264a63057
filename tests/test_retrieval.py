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
from research_env.retrieval.docstore import MAX_PASSAGE_CHARS, CorpusWarning, read_corpus


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


# -- the one corpus reader: every backend refuses or fixes the same bad corpora -------------------------------


def write_corpus(path, *lines: str | bytes):
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "1", "contents": "ok"}', "not json"], r"bad.jsonl:2: not a JSON line"),
        (['{"id": "1", "contents": "ok"}', b"\xff\xfe\x00junk"], r"bad.jsonl:2: not a JSON line"),
        (['{"id": "1", "contents": "ok"}', '["a", "list"]'], r"bad.jsonl:2: expected an object .* got a JSON list"),
        (['{"id": "1"}'], r'bad.jsonl:1: "contents" is missing'),
        (['{"id": true, "contents": "x"}'], r'bad.jsonl:1: "id" is a JSON bool'),
        (['{"contents": "x"}'], r'bad.jsonl:1: "id" is missing'),
        (["", "  "], r"bad.jsonl holds no documents"),
        (
            ['{"id": "a", "contents": "x"}', '{"id": "b", "contents": "y"}', '{"id": "a", "contents": "z"}'],
            r"bad.jsonl: 1 ids occur more than once, e.g. 'a' on lines 1, 3",
        ),
        (['{"id": 7, "contents": "x"}', '{"id": "7", "contents": "y"}'], r"'7' on lines 1, 2"),
    ],
)
def test_bad_corpora_are_refused_naming_file_and_line(tmp_path, lines, message):
    corpus = write_corpus(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(CorpusFormatError, match=message):
        list(read_corpus(corpus))


def test_every_backend_refuses_duplicate_ids_and_cuts_absurd_passages(tmp_path):
    """pyserini and bm25s read through the same reader: a duplicate id fails the build (no index published);
    a 1M-character passage is indexed and returned cut to MAX_PASSAGE_CHARS, with a warning naming it."""
    from research_env.retrieval.bm25s_retriever import BM25SRetriever, build_bm25s_index

    dup = write_corpus(tmp_path / "dup.jsonl", '{"id": "a", "contents": "alpha"}', '{"id": "a", "contents": "beta"}')
    huge = write_corpus(
        tmp_path / "huge.jsonl",
        '{"id": "small", "contents": "zebra crossing"}',
        json.dumps({"id": "huge", "contents": "zebra " * 200_000}),
    )
    for build, load in (
        (lambda c, d: build_bm25_index(c, d, progress=False), BM25Retriever),
        (build_bm25s_index, BM25SRetriever),
    ):
        with pytest.raises(CorpusFormatError, match="'a' on lines 1, 2"):
            build(dup, tmp_path / "dup_index")
        assert not (tmp_path / "dup_index").exists()
        index = tmp_path / f"huge_{load.__name__}"
        with pytest.warns(CorpusWarning, match=r"huge.jsonl:2: passage 'huge' has 1,200,000 characters"):
            build(huge, index)
        docs = {d.id: d.contents for d in load(index).search(["zebra"], 2)[0]}
        assert len(docs["huge"]) == MAX_PASSAGE_CHARS and docs["small"] == "zebra crossing"


def test_every_backend_returns_a_lone_surrogate_as_a_replacement_character(tmp_path):
    """JSON can spell a lone surrogate ("\\ud800"), which no UTF-8 response or tokenizer can take: every backend
    returns it as U+FFFD (Lucene's encoder did so already; the reader now does it for the Python backends)."""
    from research_env.retrieval.bm25s_retriever import BM25SRetriever, build_bm25s_index

    corpus = write_corpus(
        tmp_path / "odd.jsonl",
        json.dumps({"id": "a", "contents": "zebra broken \ud800 city"}),
        json.dumps({"id": "b", "contents": "nothing here"}),
    )
    for build, load in (
        (lambda c, d: build_bm25_index(c, d, progress=False), BM25Retriever),
        (build_bm25s_index, BM25SRetriever),
    ):
        index = tmp_path / f"odd_{load.__name__}"
        build(corpus, index)
        (hit,) = load(index).search(["zebra city"], 1)[0]
        assert hit.contents == "zebra broken \ufffd city", load.__name__
        hit.contents.encode("utf-8")


def test_concurrent_cache_builds_build_once(tmp_path):
    """build_once, behind every cached index: racing builders wait for the first one and reuse its result."""
    import threading
    import time

    from research_env.staging import build_once, staged_directory

    builds = []

    def build(target):
        builds.append(target)
        with staged_directory(target) as staging:
            time.sleep(0.3)
            (staging / "done").touch()

    results = []
    threads = [threading.Thread(target=lambda: results.append(build_once(tmp_path / "idx", build))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and results == [tmp_path / "idx"] * 4 and (tmp_path / "idx" / "done").is_file()
