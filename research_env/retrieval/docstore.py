"""A document store for index backends that only return row numbers (faiss, bm25s): the passages as JSONL
plus an array of line offsets, read through mmap so that a 21M-passage corpus costs no RAM up front."""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from research_env.retrieval.base import Document

DOCS_FILE, OFFSETS_FILE = "docs.jsonl", "offsets.npy"


class CorpusFormatError(ValueError):
    """A corpus line is not a JsonCollection document ``{"id": ..., "contents": ...}``."""


def iter_corpus_lines(corpus: str | os.PathLike) -> Iterator[tuple[bytes, dict]]:
    """Each document of a JsonCollection JSONL as (raw line, parsed document), checking its shape.

    The one corpus reader: BM25 indexes the raw lines, the dense and bm25s backends the parsed ones, and a bad
    line is reported with its line number whichever backend meets it.
    """
    path = Path(corpus)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {path} does not exist")
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as e:
                raise CorpusFormatError(f"{path}:{line_no}: not JSON ({e})") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("id"), str | int) or \
                    not isinstance(doc.get("contents"), str):
                raise CorpusFormatError(f'{path}:{line_no}: expected {{"id": str, "contents": str}}; a BEIR or '
                                        '{title, text} corpus converts with scripts/build_corpus.py --passages')
            yield raw, doc


def read_corpus(corpus: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """``(id, contents)`` of each document of a JsonCollection JSONL, checking its shape."""
    for _, doc in iter_corpus_lines(corpus):
        yield str(doc["id"]), doc["contents"]


def write_docstore(documents: Iterable[tuple[str, str]], directory: str | os.PathLike) -> int:
    """Write ``(id, contents)`` pairs into ``directory``; returns how many were written."""
    directory = Path(directory)
    offsets = [0]
    with (directory / DOCS_FILE).open("wb") as f:
        for doc_id, contents in documents:
            f.write(json.dumps({"id": doc_id, "contents": contents}, ensure_ascii=False).encode() + b"\n")
            offsets.append(f.tell())
    np.save(directory / OFFSETS_FILE, np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


class DocStore:
    """Row number → :class:`Document`, for the rows an index backend returns."""

    def __init__(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        if not (directory / DOCS_FILE).is_file() or not (directory / OFFSETS_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no document store ({DOCS_FILE}, {OFFSETS_FILE}); "
                                    "rebuild the index with scripts/build_index.py")
        self._offsets = np.load(directory / OFFSETS_FILE, mmap_mode="r")
        self._file = (directory / DOCS_FILE).open("rb")
        size = os.fstat(self._file.fileno()).st_size
        self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def document(self, row: int, score: float) -> Document:
        raw = json.loads(self._data[int(self._offsets[row]):int(self._offsets[row + 1])])
        return Document(id=raw["id"], contents=raw["contents"], score=float(score))
