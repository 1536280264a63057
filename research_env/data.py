"""Multi-hop QA datasets as one record type (SPEC §5).

Files are read with Hugging Face ``datasets`` (memory-mapped Arrow, so the full 20k-question
training sets cost no RAM) and mapped to :class:`QARecord` on access. The format is detected from
the first record: FlashRAG JSONL, parquet, raw MuSiQue, raw HotpotQA or raw 2WikiMultihopQA.
"""

from __future__ import annotations

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


def _first_record(path: Path) -> dict[str, Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {name: None for name in pq.read_schema(path).names}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetFormatError(f"{path} is not JSON lines: {e}") from None
    raise DatasetFormatError(f"{path} holds no records")


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
    return QARecord(str(row["id"]), row["question"], tuple([answers] if isinstance(answers, str) else answers),
                    metadata)


def _musique(row: Mapping[str, Any]) -> QARecord:
    golden = (row["answer"], *(row.get("answer_aliases") or ()))
    metadata = {"question_decomposition": row["question_decomposition"], "answerable": row.get("answerable", True)}
    return QARecord(str(row["id"]), row["question"], golden, metadata)


def _hotpot_like(row: Mapping[str, Any]) -> QARecord:
    metadata = {k: row[k] for k in ("type", "level", "supporting_facts", "evidences") if row.get(k) is not None}
    return QARecord(str(row["_id"]), row["question"], (row["answer"],), metadata)


_TO_RECORD: dict[str, Callable[[Mapping[str, Any]], QARecord]] = {
    "flashrag": _flashrag, "musique": _musique, "hotpotqa": _hotpot_like, "2wiki": _hotpot_like,
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
            raise KeyError(f"question id {question_id!r} is not in {self.source}") from None


def load_qa_dataset(dataset: Any, split: str | None = None, fmt: DatasetFormat | None = None) -> QADataset:
    """Load any supported QA file (or a directory of split files), a Hugging Face ``Dataset``/``DatasetDict`` or
    a ``save_to_disk`` directory as a :class:`QADataset`."""
    import datasets

    from research_env.hf_data import is_hf_dataset, load_hf_qa_dataset

    if is_hf_dataset(dataset):  # a Dataset/DatasetDict object or a save_to_disk directory
        return load_hf_qa_dataset(dataset, split, fmt)
    path, hf_split = resolve_data_file(dataset, split)
    fmt = fmt or detect_format(path)
    if fmt not in _TO_RECORD:
        raise DatasetFormatError(f"unknown format {fmt!r}; supported: {FORMATS}")
    builder = "parquet" if path.suffix == ".parquet" else "json"
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split=hf_split)
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    if len(table) == 0:
        raise DatasetFormatError(f"{path} holds no records")
    return QADataset(table, fmt, str(path))
