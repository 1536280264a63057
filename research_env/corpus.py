"""Build a pyserini JsonCollection from the paragraphs that raw MuSiQue, HotpotQA and 2Wiki ship with
each question: the "distractor setting" corpus in which every question is answerable, which makes a
real, small retrieval corpus for demos and end-to-end tests."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from research_env.data import detect_format
from research_env.retrieval.docstore import CorpusFormatError


def passage_contents(title: str, text: str) -> str:
    """The JsonCollection ``contents`` layout of FlashRAG's Wikipedia corpora: ``"Title"\\ntext``."""
    return f'"{title}"\n{text.strip()}'


def _paragraphs(fmt: str, row: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if fmt == "musique":
        for p in row["paragraphs"]:
            yield p["title"], p["paragraph_text"]
    elif fmt == "hotpotqa":  # HotpotQA sentences carry their own leading spaces
        for title, sentences in row["context"]:
            yield title, "".join(sentences)
    elif fmt == "2wiki":
        for title, sentences in row["context"]:
            yield title, " ".join(s.strip() for s in sentences)
    else:
        raise ValueError(f"{fmt!r} rows carry no paragraphs; raw MuSiQue, HotpotQA or 2Wiki files do")


def iter_passages(paths: Iterable[str | os.PathLike]) -> Iterator[dict[str, str]]:
    """Unique passages ``{"id", "contents"}`` of the given raw files, in order of first appearance.

    Ids are content hashes, so the same paragraph gets the same id in every corpus built from it.
    """
    import datasets

    seen: set[str] = set()
    for path in paths:
        fmt = detect_format(path)
        for row in datasets.load_dataset("json", data_files=str(path), split="train"):
            for title, text in _paragraphs(fmt, row):
                contents = passage_contents(title, text)
                doc_id = hashlib.sha1(contents.encode("utf-8")).hexdigest()[:16]
                if doc_id not in seen:
                    seen.add(doc_id)
                    yield {"id": doc_id, "contents": contents}


def write_jsonl(passages: Iterable[Mapping[str, str]], out_path: str | os.PathLike) -> int:
    """Write passages as JSON lines; returns how many were written."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for passage in passages:
            f.write(json.dumps(passage, ensure_ascii=False) + "\n")
            n += 1
    return n


def build_corpus(
    raw_paths: Iterable[str | os.PathLike], out_path: str | os.PathLike, extra_corpora: Iterable[str | os.PathLike] = ()
) -> int:
    """Write the union of the raw files' paragraphs plus any existing JsonCollection files to ``out_path``."""

    def passages() -> Iterator[Mapping[str, str]]:
        yield from iter_passages(raw_paths)
        for corpus in extra_corpora:
            with open(corpus, encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())

    return write_jsonl(passages(), out_path)


def iter_titled_passages(paths: Iterable[str | os.PathLike]) -> Iterator[dict[str, str]]:
    """JsonCollection passages of corpora in the layouts users have: BEIR's ``corpus.jsonl`` (``_id``, ``title``,
    ``text``), ``{"title", "text"}`` lines (the id is then a hash of the contents, as in :func:`iter_passages`),
    or lines that already are ``{"id", "contents"}``. Ids must be unique across all files."""
    seen: dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{line_no}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusFormatError(f"{where}: not a JSON line ({error})") from None
                if not isinstance(row, dict) or not isinstance(row.get("text", row.get("contents")), str):
                    keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise CorpusFormatError(
                        f"{where}: a passage needs a 'text' string (BEIR: _id, title, text) or "
                        f"'id' and 'contents'; found {keys}"
                    )
                if "contents" in row and "text" not in row:
                    contents = row["contents"]
                else:
                    contents = passage_contents(str(row.get("title") or ""), row["text"])
                doc_id = row.get("_id", row.get("id"))
                doc_id = hashlib.sha1(contents.encode("utf-8")).hexdigest()[:16] if doc_id is None else str(doc_id)
                if doc_id in seen:
                    raise CorpusFormatError(
                        f"{where}: passage id {doc_id!r} was already used at {seen[doc_id]}; ids must be unique"
                    )
                seen[doc_id] = where
                yield {"id": doc_id, "contents": contents}


def convert_corpus(paths: Iterable[str | os.PathLike], out_path: str | os.PathLike) -> int:
    """Write BEIR / ``{title, text}`` corpora as one JsonCollection JSONL (see :func:`iter_titled_passages`); a bad
    line leaves no output file behind, so a half-converted corpus is never indexed."""
    out = Path(out_path)
    partial = out.with_name(out.name + ".partial")
    try:
        n = write_jsonl(iter_titled_passages(paths), partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return n
