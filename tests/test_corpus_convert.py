"""Corpora in the layouts users have (BEIR's corpus.jsonl, {title, text} lines) become a JsonCollection that the
env searches with its real BM25 index; bad lines are refused with the file and line named, leaving no output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_corpus  # noqa: E402

from research_env.corpus import passage_contents  # noqa: E402

BEIR = [
    {"_id": "doc1", "title": "Barvex", "text": "Barvex was founded by Galtak Peldul.", "metadata": {}},
    {"_id": "doc2", "title": "Peldul", "text": "Galtak Peldul was born in Tormina."},
]
TITLED = [{"title": "Tormina", "text": "Tormina is a city on the river Ossel."}]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_beir_and_titled_passages_convert_to_a_searchable_json_collection(tmp_path, capsys):
    out = tmp_path / "corpus.jsonl"
    build_corpus.main(
        [
            "--passages",
            str(_write(tmp_path / "beir.jsonl", BEIR)),
            str(_write(tmp_path / "titled.jsonl", TITLED)),
            "--out",
            str(out),
        ]
    )
    assert "wrote 3 passages" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows[:2]] == ["doc1", "doc2"] and len(rows[2]["id"]) == 16
    assert rows[0]["contents"] == passage_contents("Barvex", BEIR[0]["text"]) == '"Barvex"\n' + BEIR[0]["text"]

    from research_env.retrieval import BM25Retriever

    [hits] = BM25Retriever.from_corpus(out).search(["who founded Barvex"], 1)
    assert hits[0].id == "doc1" and hits[0].contents == rows[0]["contents"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "beir.jsonl:2: not a JSON line"),
        ('{"_id": "x", "title": "no text"}', "beir.jsonl:2: a passage needs a 'text' string"),
        ('{"_id": "doc1", "title": "again", "text": "t"}', "passage id 'doc1' was already used at"),
    ],
)
def test_bad_lines_name_the_file_and_line_and_leave_no_output(tmp_path, capsys, line, message):
    source = tmp_path / "beir.jsonl"
    source.write_text(json.dumps(BEIR[0]) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        build_corpus.main(["--passages", str(source), "--out", str(tmp_path / "corpus.jsonl")])
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [source]
