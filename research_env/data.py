"""Multi-hop QA datasets as one record type (SPEC §5).

Files are read with Hugging Face ``datasets`` (memory-mapped Arrow, so the full 20k-question
training sets cost no RAM), every row is checked once at load, and rows are mapped to :class:`QARecord`
on access. The format is detected from the first record: FlashRAG JSONL, parquet, raw MuSiQue, raw HotpotQA
or raw 2WikiMultihopQA, as JSON lines or one JSON array.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DatasetFormat = str  # one of FORMATS
FORMATS = ("flashrag", "musique", "hotpotqa", "2wiki")
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetFormatError(ValueError):
    """The file is not one of the supported QA formats."""


@dataclass(frozen=True)
class QARecord:
    """One question: the unit of an episode. ``metadata`` keeps what a format adds, e.g. MuSiQue's
    ``question_decomposition`` (used by the oracle agent) or HotpotQA's ``supporting_facts``."""

    id: str
    question: str
    golden_answers: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _not_utf8(path: Path, error: UnicodeDecodeError) -> DatasetFormatError:
    byte = error.object[error.start : error.start + 1]
    return DatasetFormatError(
        f"{path} is not UTF-8 text (byte {error.start} is {byte!r}): a compressed or binary "
        "file? Decompress it, or pass FlashRAG/raw JSONL, a JSON array or parquet"
    )


def _first_record(path: Path) -> dict[str, Any]:
    """The first record of a JSON-lines file or a JSON array (as the official HotpotQA and 2Wiki downloads
    are), or a parquet file's columns."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {name: None for name in pq.read_schema(path).names}
    try:
        with path.open(encoding="utf-8") as f:
            start = f.read(4096).lstrip()
            if start.startswith("["):
                f.seek(0)
                return _first_of_array(path, f)
            f.seek(0)
            for number, line in enumerate(f, start=1):
                if line.strip():
                    return _json_object(path, line, f"line {number}")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    raise DatasetFormatError(f"{path} holds no records")


def _first_of_array(path: Path, f: Any) -> dict[str, Any]:
    try:
        records = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path} starts like a JSON array but is not valid JSON: {e}") from None
    if not records:
        raise DatasetFormatError(f"{path} holds no records (an empty JSON array)")
    if not isinstance(records[0], dict):
        raise DatasetFormatError(f"{path}, record 0: expected a JSON object, got {type(records[0]).__name__}")
    return records[0]


def _json_object(path: Path, line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path}, {where} is not JSON lines: {e}") from None
    if not isinstance(record, dict):
        raise DatasetFormatError(
            f"{path}, {where}: expected a JSON object per line, got {type(record).__name__} "
            "(a JSON array must be the whole file)"
        )
    return record


def detect_format(path: str | os.PathLike) -> DatasetFormat:
    """Which QA format a file holds, from the keys of its first record (or the parquet columns)."""
    return format_of_keys(set(_first_record(Path(path))), str(path))


def format_of_keys(keys: set[str], source: str) -> DatasetFormat:
    """Which QA format records with these keys (a file's first record, a table's columns) are in."""
    if {"question", "golden_answers"} <= keys:
        return "flashrag"
    if {"question_decomposition", "paragraphs", "answer"} <= keys:
        return "musique"
    if {"_id", "context", "supporting_facts", "answer"} <= keys:
        return "2wiki" if "evidences" in keys else "hotpotqa"
    raise DatasetFormatError(
        f"{source}: cannot tell the format from the keys {sorted(keys)}; expected FlashRAG "
        "(id, question, golden_answers), raw MuSiQue, raw HotpotQA or raw 2WikiMultihopQA"
    )


def _flashrag(row: Mapping[str, Any]) -> QARecord:
    answers = row["golden_answers"]
    metadata = row.get("metadata") or {}
    if isinstance(metadata, str):  # parquet files written by prepare_data keep metadata as JSON text
        metadata = json.loads(metadata)
    return QARecord(
        str(row["id"]), row["question"], tuple([answers] if isinstance(answers, str) else answers), metadata
    )


def _musique(row: Mapping[str, Any]) -> QARecord:
    golden = (row["answer"], *(row.get("answer_aliases") or ()))
    metadata = {"question_decomposition": row["question_decomposition"], "answerable": row.get("answerable", True)}
    return QARecord(str(row["id"]), row["question"], golden, metadata)


def _hotpot_like(row: Mapping[str, Any]) -> QARecord:
    metadata = {k: row[k] for k in ("type", "level", "supporting_facts", "evidences") if row.get(k) is not None}
    return QARecord(str(row["_id"]), row["question"], (row["answer"],), metadata)


def _is_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value) != ""


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_answers(value: Any) -> bool:
    return _is_text(value) or (isinstance(value, list) and bool(value) and all(isinstance(a, str) for a in value))


def _is_optional_strings(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(a, str) for a in value))


_ID = (_is_id, "an id (a non-empty string or an integer)")
_QUESTION = (_is_text, "a non-empty string")
_ANSWER = (_is_text, "a non-empty string")
#: What every row of a format must hold: field -> (check, what the check wants). Checked when a file is loaded, so
#: that a bad row is reported with its line at once, not as a TypeError when an episode happens to draw it.
ROW_FIELDS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "flashrag": {
        "id": _ID,
        "question": _QUESTION,
        "golden_answers": (_is_answers, "a non-empty list of strings (or one string)"),
        "metadata": (lambda v: v is None or isinstance(v, dict | str), "an object, JSON text or absent"),
    },
    "musique": {
        "id": _ID,
        "question": _QUESTION,
        "answer": _ANSWER,
        "answer_aliases": (_is_optional_strings, "a list of strings or absent"),
        "question_decomposition": (lambda v: isinstance(v, list), "a list of sub-questions"),
    },
    "hotpotqa": {"_id": _ID, "question": _QUESTION, "answer": _ANSWER},
    "2wiki": {"_id": _ID, "question": _QUESTION, "answer": _ANSWER},
}


def _where(path: Path, row: int) -> str:
    """Where row ``row`` of a loaded table is in its file: the line of a JSON-lines file (blank lines are
    skipped when loading), the record of a JSON array, the row of a parquet file."""
    if path.suffix == ".parquet":
        return f"row {row}"
    with path.open(encoding="utf-8") as f:
        if f.read(4096).lstrip().startswith("["):
            return f"record {row} of the JSON array"
        f.seek(0)
        rows = (number for number, line in enumerate(f, start=1) if line.strip())
        return f"line {next(itertools.islice(rows, row, None), '?')}"


def _parsed_rows(path: Path) -> dict[str, list[Any]]:
    """The columns of a JSON-lines file or JSON array as parsed by ``json``, with None where a row lacks a field."""
    with path.open(encoding="utf-8") as f:
        if f.read(4096).lstrip().startswith("["):
            f.seek(0)
            rows = json.load(f)
        else:
            f.seek(0)
            rows = [_json_object(path, line, f"line {n}") for n, line in enumerate(f, start=1) if line.strip()]
    names = {name for row in rows if isinstance(row, dict) for name in row}
    return {name: [row.get(name) if isinstance(row, dict) else None for row in rows] for name in names}


def validate_rows(table: Any, fmt: DatasetFormat, path: Path) -> None:
    """Check every row of ``table`` (a Hugging Face Dataset read from ``path``, or columns of parsed rows)
    against :data:`ROW_FIELDS` and for duplicate ids; raise :class:`DatasetFormatError` naming the file, the
    line and the field."""
    fields = ROW_FIELDS[fmt]
    if isinstance(table, dict):
        columns, n_rows = table, max(map(len, table.values()), default=0)
    else:  # one decoded batch of just the checked columns
        columns, n_rows = table.select_columns([name for name in fields if name in table.column_names])[:], len(table)
    for field_name, (check, wanted) in fields.items():
        values = columns.get(field_name, [None] * n_rows)
        bad = [i for i, value in enumerate(values) if not check(value)]
        if bad:
            value = values[bad[0]]
            got = "nothing (the field is missing)" if value is None else f"{value!r:.120}"
            more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
            raise DatasetFormatError(
                f"{path}, {_where(path, bad[0])}: {field_name!r} must be {wanted}, got {got}"
                f"{more}; fix or remove those rows"
            )
    ids = [str(qid) for qid in columns["_id" if fmt in ("hotpotqa", "2wiki") else "id"]]
    seen: dict[str, int] = {}
    for row, qid in enumerate(ids):
        if qid in seen:
            raise DatasetFormatError(
                f"{path}, {_where(path, row)}: question id {qid!r} was already used at "
                f"{_where(path, seen[qid])}; ids must be unique (reset(options={{'question_id'"
                ": ...}}) picks by id)"
            )
        seen[qid] = row


_TO_RECORD: dict[str, Callable[[Mapping[str, Any]], QARecord]] = {
    "flashrag": _flashrag,
    "musique": _musique,
    "hotpotqa": _hotpot_like,
    "2wiki": _hotpot_like,
}


def _slice_of(split: str | None) -> str:
    """The Hugging Face split string for the one table a file holds: ``"train"`` plus any slice."""
    if split is None:
        return "train"
    _, bracket, rest = split.partition("[")
    return "train" + bracket + rest


def resolve_data_file(dataset: str | os.PathLike, split: str | None = None) -> tuple[Path, str]:
    """The file to read and the Hugging Face split to take from it.

    A directory holds one file per split (``dev.jsonl``, ``train.parquet``, …: FlashRAG's layout) and
    ``split`` names one, optionally sliced (``"dev[:100]"``). A file is a single split: ``split`` may
    only slice it (``"[:100]"`` or ``"train[:100]"``).
    """
    path = Path(dataset).expanduser()
    if path.is_dir():
        name = (split or "dev").partition("[")[0]
        for suffix in _DATA_SUFFIXES:
            candidate = path / f"{name}{suffix}"
            if candidate.is_file():
                return candidate, _slice_of(split)
        raise FileNotFoundError(f"no {name}.jsonl/.json/.parquet in {path}")
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    if split is not None and split.partition("[")[0] not in ("", "train"):
        raise ValueError(f"{path} is a single file: split={split!r} can only slice it, e.g. '[:100]'")
    return path, _slice_of(split)


class QADataset(Sequence[QARecord]):
    """A read-only sequence of :class:`QARecord` backed by a Hugging Face ``Dataset``."""

    def __init__(self, table: Any, fmt: DatasetFormat, source: str) -> None:
        self.table = table  # the underlying Hugging Face Dataset, in the file's own schema
        self.to_record = _TO_RECORD[fmt]
        self.format = fmt
        self.source = source
        self._index_of_id: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> QARecord:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"question index {index} out of range for {len(self)} questions")
        return self.to_record(self.table[int(index)])

    def __iter__(self) -> Iterator[QARecord]:
        return (self.to_record(row) for row in self.table)

    @property
    def ids(self) -> list[str]:
        """Every question id in file order, read from the id column alone (no record is built)."""
        id_column = "_id" if self.format in ("hotpotqa", "2wiki") else "id"
        return [str(qid) for qid in self.table[id_column]]

    def index_of(self, question_id: str) -> int:
        """Position of a question id (built once, on first use)."""
        if self._index_of_id is None:
            self._index_of_id = {qid: i for i, qid in enumerate(self.ids)}
        try:
            return self._index_of_id[str(question_id)]
        except KeyError:
            raise KeyError(
                f"question id {question_id!r} is not in {self.source} ({len(self)} questions, the first "
                f"{self.ids[0]!r}); pick an id from dataset.ids, or pass {{'index': i}}"
            ) from None


def load_qa_dataset(dataset: Any, split: str | None = None, fmt: DatasetFormat | None = None) -> QADataset:
    """Load any supported QA file (or a directory of split files), a Hugging Face ``Dataset``/``DatasetDict`` or
    a ``save_to_disk`` directory as a :class:`QADataset`; every row is checked (:func:`validate_rows`) before the
    first episode."""
    from research_env.hf_data import is_hf_dataset, load_hf_qa_dataset

    if is_hf_dataset(dataset):  # a Dataset/DatasetDict object or a save_to_disk directory
        return load_hf_qa_dataset(dataset, split, fmt)
    path, hf_split = resolve_data_file(dataset, split)
    fmt = fmt or detect_format(path)
    if fmt not in _TO_RECORD:
        raise DatasetFormatError(f"unknown format {fmt!r}; supported: {FORMATS}")
    builder = "parquet" if path.suffix == ".parquet" else "json"
    table = _read(builder, path, "train", fmt)
    if len(table) == 0:
        raise DatasetFormatError(f"{path} holds no records")
    validate_rows(table, fmt, path)
    if hf_split != "train":
        table = _read(builder, path, hf_split, fmt)  # the slice, from the cache the first read wrote
    return QADataset(table, fmt, str(path))


def _read(builder: str, path: Path, hf_split: str, fmt: DatasetFormat) -> Any:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(builder, data_files=str(path), split=hf_split)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    except (datasets.exceptions.DatasetGenerationError, ValueError, TypeError) as e:
        if builder == "json":  # name the row that Arrow could not take, where a check can tell
            validate_rows(_parsed_rows(path), fmt, path)
        raise DatasetFormatError(f"{path} could not be read as {builder}: {e.__cause__ or e}") from e
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
