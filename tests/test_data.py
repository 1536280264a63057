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


@pytest.mark.parametrize(
    "name, title_text",
    [
        ("hotpotqa/hotpot_dev_distractor_v1.sample100.jsonl", lambda c: (c[0][0], "".join(c[0][1]))),
        (
            "2wikimultihopqa/2wikimultihopqa_dev.sample82.jsonl",
            lambda c: (c[0][0], " ".join(s.strip() for s in c[0][1])),
        ),
    ],
)
def test_hotpot_and_2wiki_paragraphs_become_passages(shared_data, name, title_text):
    first_row = json.loads((shared_data / name).open().readline())
    first = next(iter_passages([shared_data / name]))
    assert first["contents"] == passage_contents(*title_text(first_row["context"]))


def test_flashrag_rows_have_no_paragraphs(shared_data, tmp_path):
    with pytest.raises(ValueError, match="carry no paragraphs"):
        build_corpus([shared_data / "bamboogle/test.jsonl"], tmp_path / "c.jsonl")


# --- every row is checked at load (issue 12, item 5) ------------------------------------------------------------


def write_rows(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def flashrag_rows(n: int = 4) -> list[dict]:
    return [{"id": f"q{i}", "question": f"Question {i}?", "golden_answers": [f"a{i}"]} for i in range(n)]


@pytest.mark.parametrize(
    "edit, line, field",
    [
        (lambda row: row.pop("golden_answers"), 3, "'golden_answers' must be a non-empty list of strings"),
        (lambda row: row.update(golden_answers=[1, 2]), 3, "'golden_answers'"),
        (lambda row: row.update(golden_answers=[]), 3, "'golden_answers'"),
        (lambda row: row.update(question=7), 3, "'question' must be a non-empty string, got 7"),
        (lambda row: row.update(id=None), 3, "'id' must be an id"),
    ],
)
def test_a_bad_row_is_reported_with_its_file_and_line_at_load(tmp_path, edit, line, field):
    rows = flashrag_rows()
    edit(rows[1])
    write_rows(tmp_path / "d.jsonl", ["", rows[0], rows[1], *rows[2:]])  # a blank first line still counts
    with pytest.raises(DatasetFormatError, match=rf"d\.jsonl, line {line}: {field}"):
        load_qa_dataset(tmp_path / "d.jsonl")


def test_raw_rows_are_checked_too(shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "musique/musique_ans_v1.0_dev.sample100.jsonl").open()][:5]
    del rows[4]["answer"]
    write_rows(tmp_path / "m.jsonl", rows)
    with pytest.raises(DatasetFormatError, match=r"m\.jsonl, line 5: 'answer' must be a non-empty string"):
        load_qa_dataset(tmp_path / "m.jsonl")


def test_duplicate_ids_name_both_lines(tmp_path):
    rows = flashrag_rows()
    rows[3]["id"] = "q1"
    write_rows(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetFormatError, match=r"line 4: question id 'q1' was already used at line 2"):
        load_qa_dataset(tmp_path / "d.jsonl")


def test_binary_junk_is_named_as_such(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"id": "q0"' + bytes(range(128, 256)))
    with pytest.raises(DatasetFormatError, match=r"d\.jsonl is not UTF-8 text .*compressed or binary"):
        load_qa_dataset(tmp_path / "d.jsonl")


@pytest.mark.parametrize(
    "name", ["hotpotqa/hotpot_dev_distractor_v1.sample100.jsonl", "2wikimultihopqa/2wikimultihopqa_dev.sample82.jsonl"]
)
@pytest.mark.parametrize("indent", [None, 1])
def test_official_json_array_downloads_load_like_their_jsonl(shared_data, tmp_path, name, indent):
    rows = [json.loads(line) for line in (shared_data / name).open()]
    (tmp_path / "dev.json").write_text(json.dumps(rows, indent=indent))
    as_array, as_lines = load_qa_dataset(tmp_path / "dev.json"), load_qa_dataset(shared_data / name)
    assert as_array.format == as_lines.format and list(as_array) == list(as_lines)
    del rows[7]["question"]
    (tmp_path / "bad.json").write_text(json.dumps(rows, indent=indent))
    with pytest.raises(DatasetFormatError, match=r"bad\.json, record 7 of the JSON array: 'question'"):
        load_qa_dataset(tmp_path / "bad.json")


def test_a_line_that_is_not_an_object_is_a_clear_error(tmp_path):
    rows = flashrag_rows()
    write_rows(tmp_path / "d.jsonl", [rows[0], "[1, 2]", *rows[1:]])
    with pytest.raises(DatasetFormatError, match=r"line 2: expected a JSON object per line, got list"):
        load_qa_dataset(tmp_path / "d.jsonl")
    write_rows(tmp_path / "d.jsonl", ["[1, 2]", *rows])
    with pytest.raises(DatasetFormatError, match=r"starts like a JSON array but is not valid JSON"):
        load_qa_dataset(tmp_path / "d.jsonl")
