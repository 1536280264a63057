"""Loaders for every supported format (on the real samples), format detection, split layout,
the parquet preparation and the corpus builder."""

from __future__ import annotations

import json

import pytest

from research_env.corpus import build_corpus, iter_passages, passage_contents
from research_env.data import DatasetFormatError, detect_format, load_qa_dataset
from research_env.prepare import prepare_musique

SAMPLES = {
    "musique/musique_ans_v1.0_dev.sample100.jsonl": ("musique", 100),
    "musique/dev.flashrag.sample100.jsonl": ("flashrag", 100),
    "hotpotqa/hotpot_dev_distractor_v1.sample100.jsonl": ("hotpotqa", 100),
    "2wikimultihopqa/2wikimultihopqa_dev.sample82.jsonl": ("2wiki", 82),
    "bamboogle/test.jsonl": ("flashrag", 125),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_loads_as_records(shared_data, name):
    fmt, n = SAMPLES[name]
    dataset = load_qa_dataset(shared_data / name)
    assert (dataset.format, len(dataset)) == (fmt, n)
    raw = [json.loads(line) for line in (shared_data / name).open()]
    for i in (0, n - 1):
        record, row = dataset[i], raw[i]
        assert record.id == str(row.get("id", row.get("_id")))
        assert record.question == row["question"]
        gold = row.get("golden_answers") or [row["answer"], *row.get("answer_aliases", [])]
        assert record.golden_answers == tuple(gold)
        assert dataset.index_of(record.id) == i
    assert dataset.ids == [r.id for r in dataset]  # read from the id column, equal to the records' ids


def test_raw_and_flashrag_musique_agree(shared_data):
    raw = load_qa_dataset(shared_data / "musique/musique_ans_v1.0_dev.sample100.jsonl")
    flash = load_qa_dataset(shared_data / "musique/dev.flashrag.sample100.jsonl")
    for a, b in zip(raw, flash, strict=True):
        assert (a.id, a.question, a.golden_answers) == (b.id, b.question, b.golden_answers)
        assert a.metadata["question_decomposition"] == b.metadata["question_decomposition"]


def test_unknown_format_and_bad_json_are_clear_errors(tmp_path):
    (tmp_path / "odd.jsonl").write_text('{"q": 1}\n')
    with pytest.raises(DatasetFormatError, match="cannot tell the format"):
        detect_format(tmp_path / "odd.jsonl")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(DatasetFormatError, match="not JSON lines"):
        load_qa_dataset(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetFormatError, match="no records"):
        load_qa_dataset(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError):
        load_qa_dataset(tmp_path / "missing.jsonl")


def test_split_selects_a_file_in_a_directory_and_slices_a_file(shared_data, tmp_path):
    (tmp_path / "dev.jsonl").write_text((shared_data / "bamboogle/test.jsonl").read_text())
    assert len(load_qa_dataset(tmp_path, split="dev")) == 125
    assert len(load_qa_dataset(tmp_path, split="dev[:7]")) == 7
    assert len(load_qa_dataset(tmp_path / "dev.jsonl", split="[:5]")) == 5
    with pytest.raises(ValueError, match="single file"):
        load_qa_dataset(tmp_path / "dev.jsonl", split="test")
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        load_qa_dataset(tmp_path, split="test")


def test_unknown_question_id_is_a_clear_error(shared_data):
    with pytest.raises(KeyError, match="not in"):
        load_qa_dataset(shared_data / "bamboogle/test.jsonl").index_of("nope")


def test_prepare_musique_writes_parquet_that_loads_back(shared_data, tmp_path):
    raw = shared_data / "musique/musique_ans_v1.0_dev.sample100.jsonl"
    counts = prepare_musique(raw, raw, tmp_path, val_size=10, seed=42)
    assert counts == {"train": 100, "dev": 10}
    train, dev = load_qa_dataset(tmp_path, split="train"), load_qa_dataset(tmp_path, split="dev")
    assert list(train.table.column_names) == ["id", "question", "golden_answers", "data_source", "metadata"]
    original = load_qa_dataset(raw)
    assert [r.golden_answers for r in train] == [r.golden_answers for r in original]
    assert train[0].metadata["question_decomposition"] == original[0].metadata["question_decomposition"]
    assert {r.id for r in dev} <= {r.id for r in original}
    again = tmp_path / "again"
    prepare_musique(None, raw, again, val_size=10, seed=42)
    assert [r.id for r in load_qa_dataset(again, split="dev")] == [r.id for r in dev]  # seeded


def test_corpus_holds_every_paragraph_once_in_jsoncollection_layout(shared_data, tmp_path):
    raw = shared_data / "musique/musique_ans_v1.0_dev.sample100.jsonl"
    rows = [json.loads(line) for line in raw.open()]
    expected = {passage_contents(p["title"], p["paragraph_text"]) for row in rows for p in row["paragraphs"]}
    n = build_corpus([raw, raw], tmp_path / "corpus.jsonl")
    docs = [json.loads(line) for line in (tmp_path / "corpus.jsonl").open()]
    assert n == len(docs) == len(expected)
    assert {d["contents"] for d in docs} == expected
    assert all(d["contents"].startswith('"') and '"\n' in d["contents"] for d in docs)
    assert len({d["id"] for d in docs}) == n


@pytest.mark.parametrize("name, title_text", [
    ("hotpotqa/hotpot_dev_distractor_v1.sample100.jsonl", lambda c: (c[0][0], "".join(c[0][1]))),
    ("2wikimultihopqa/2wikimultihopqa_dev.sample82.jsonl", lambda c: (c[0][0], " ".join(s.strip() for s in c[0][1]))),
])
def test_hotpot_and_2wiki_paragraphs_become_passages(shared_data, name, title_text):
    first_row = json.loads((shared_data / name).open().readline())
    first = next(iter_passages([shared_data / name]))
    assert first["contents"] == passage_contents(*title_text(first_row["context"]))


def test_flashrag_rows_have_no_paragraphs(shared_data, tmp_path):
    with pytest.raises(ValueError, match="carry no paragraphs"):
        build_corpus([shared_data / "bamboogle/test.jsonl"], tmp_path / "c.jsonl")
