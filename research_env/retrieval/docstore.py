"""A document store for index backends that only return row numbers (faiss, bm25s): the passages as JSONL
plus an array of line offsets, read through mmap so that a 21M-passage corpus costs no RAM up front."""

from __future__ import annotations

import json
import mmap
import os
import warnings
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from research_env.protocol import find_lone_surrogate, replace_lone_surrogates
from research_env.retrieval.base import Document

DOCS_FILE, OFFSETS_FILE = "docs.jsonl", "offsets.npy"


#: Longest passage kept, in characters; longer ones are cut at read time with a warning naming the id. DPR's
#: Wikipedia passages are ~600 characters and the env shows top-5 of them per search: one 10 MB passage would
#: be a 10M-character result block. Cut passages are indexed and returned cut, by every backend alike.
MAX_PASSAGE_CHARS = 16_384
_NAMED_WARNINGS = 10  # cut passages named one by one; the rest are counted


class CorpusFormatError(ValueError):
    """A corpus is not a JsonCollection JSONL of unique ``{"id": ..., "contents": ...}`` documents."""


class CorpusWarning(UserWarning):
    """A corpus was read with a change: a passage longer than ``MAX_PASSAGE_CHARS`` was cut."""


def iter_corpus_lines(corpus: str | os.PathLike) -> Iterator[tuple[bytes, dict]]:
    """Each document of a JsonCollection JSONL as (raw line, parsed document), checked.

    The one corpus reader, so that every backend (pyserini indexes the raw lines, bm25s and dense the parsed
    ones) applies the same rules: a line that is not a JSON object with a string ``contents`` and a string (or
    integer) ``id`` is a :class:`CorpusFormatError` naming file and line; so are duplicate ids (refused, not
    de-duplicated: which copy is right is the corpus author's call) and a corpus without documents. Those two
    are only known at the end, so they are raised after the last document: builders write into a staging
    directory and never publish such an index. Passages over ``MAX_PASSAGE_CHARS`` are cut, with a warning, and
    lone surrogates (which no response could encode) become U+FFFD.
    """
    path = Path(corpus)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {path} does not exist")
    id_hashes = array("q")  # 8 bytes per document: duplicate ids are found without holding 21M id strings
    cut = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            doc = _parse_line(raw, path, line_no)
            id_hashes.append(hash(str(doc["id"])))
            if len(doc["contents"]) > MAX_PASSAGE_CHARS:
                cut += 1
                if cut <= _NAMED_WARNINGS:
                    warnings.warn(
                        f"{path}:{line_no}: passage {doc['id']!r} has {len(doc['contents']):,} characters; "
                        f"cut to the first {MAX_PASSAGE_CHARS:,}",
                        CorpusWarning,
                        stacklevel=2,
                    )
                doc["contents"] = doc["contents"][:MAX_PASSAGE_CHARS]
                raw = json.dumps(doc, ensure_ascii=False).encode() + b"\n"
            if find_lone_surrogate(doc["contents"]) >= 0:  # JSON's "\ud800" escape: text no UTF-8 can encode
                doc["contents"] = replace_lone_surrogates(doc["contents"])
                raw = json.dumps(doc, ensure_ascii=False).encode() + b"\n"
            yield raw, doc
    if cut > _NAMED_WARNINGS:
        warnings.warn(
            f"{path}: {cut:,} passages in all were cut to {MAX_PASSAGE_CHARS:,} characters", CorpusWarning, stacklevel=2
        )
    if not id_hashes:
        raise CorpusFormatError(
            f'{path} holds no documents: a corpus has one {{"id": ..., "contents": ...}} JSON object per line'
        )
    _refuse_duplicate_ids(path, np.frombuffer(id_hashes, dtype=np.int64))


def _parse_line(raw: bytes, path: Path, line_no: int) -> dict:
    try:
        doc = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise CorpusFormatError(
            f'{path}:{line_no}: not a JSON line ({e}); a corpus has one {{"id": ..., "contents": ...}} object per line'
        ) from None
    if not isinstance(doc, dict):
        raise CorpusFormatError(
            f'{path}:{line_no}: expected an object {{"id": ..., "contents": ...}}, got a JSON {type(doc).__name__}'
        )
    for key, kinds, what in (("id", (str, int), "a string or an integer"), ("contents", (str,), "a string")):
        value = doc.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            problem = "is missing" if key not in doc else f"is a JSON {type(value).__name__}"
            raise CorpusFormatError(
                f'{path}:{line_no}: "{key}" {problem}; it must be {what} (a BEIR or '
                "{title, text} corpus converts with scripts/build_corpus.py --passages)"
            )
    return doc


def _refuse_duplicate_ids(path: Path, id_hashes: np.ndarray) -> None:
    """Raise naming the first duplicate id and its lines, if any; candidates come from the hashes, and a
    second pass over the file confirms them (a hash collision is not a duplicate)."""
    ordered = np.sort(id_hashes)
    candidates = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not candidates:
        return
    lines: dict[str, list[int]] = {}
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if raw.strip():
                doc_id = str(json.loads(raw)["id"])
                if hash(doc_id) in candidates:
                    lines.setdefault(doc_id, []).append(line_no)
    duplicates = {doc_id: at for doc_id, at in lines.items() if len(at) > 1}
    if duplicates:
        doc_id, at = next(iter(duplicates.items()))
        raise CorpusFormatError(
            f"{path}: {len(duplicates):,} ids occur more than once, e.g. {doc_id!r} on lines "
            f"{', '.join(map(str, at[:5]))}; ids must be unique (the same id would be returned "
            "twice): remove or rename the copies"
        )


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
            raise FileNotFoundError(
                f"{directory} holds no document store ({DOCS_FILE}, {OFFSETS_FILE}); "
                "rebuild the index with scripts/build_index.py"
            )
        self._offsets = np.load(directory / OFFSETS_FILE, mmap_mode="r")
        self._file = (directory / DOCS_FILE).open("rb")
        size = os.fstat(self._file.fileno()).st_size
        self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def document(self, row: int, score: float) -> Document:
        raw = json.loads(self._data[int(self._offsets[row]) : int(self._offsets[row + 1])])
        return Document(id=raw["id"], contents=raw["contents"], score=float(score))
