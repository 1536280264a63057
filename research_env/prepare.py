"""Write QA datasets as training parquet (SPEC §5): one row per question with its data source,
question, gold answers, id and JSON metadata, readable back by :func:`research_env.data.load_qa_dataset`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from research_env.data import QADataset, load_qa_dataset

PARQUET_COLUMNS = ("id", "question", "golden_answers", "data_source", "metadata")


def write_parquet(
    dataset: QADataset, out_path: str | os.PathLike, data_source: str, sample: int | None = None, seed: int = 42
) -> int:
    """Write ``dataset`` (or a seeded random sample of ``sample`` questions) to parquet; returns the row count.

    Runs as a ``datasets.map`` over the memory-mapped table, with its progress bar, so the 20k-question
    MuSiQue train set streams instead of being held in Python objects.
    """
    import datasets

    table = dataset.table
    if sample is not None and sample < len(table):
        table = table.shuffle(seed=seed).select(range(sample))
    to_record = dataset.to_record

    def to_row(row: dict) -> dict:
        record = to_record(row)
        return {
            "id": record.id,
            "question": record.question,
            "golden_answers": list(record.golden_answers),
            "data_source": data_source,
            "metadata": json.dumps(dict(record.metadata), ensure_ascii=False),
        }

    datasets.enable_progress_bars()
    rows = table.map(to_row, remove_columns=table.column_names, desc=f"{data_source} -> parquet")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(str(out_path))
    return len(rows)


def prepare_musique(
    train: str | os.PathLike | None,
    dev: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_size: int = 100,
    seed: int = 42,
) -> dict[str, int]:
    """ReSearch's data preparation: MuSiQue train as ``train.parquet`` and a seeded random sample of
    ``val_size`` dev questions as ``dev.parquet`` (the validation set used during training)."""
    out = Path(out_dir)
    counts = {}
    if train is not None:
        counts["train"] = write_parquet(load_qa_dataset(train), out / "train.parquet", "musique")
    counts["dev"] = write_parquet(load_qa_dataset(dev), out / "dev.parquet", "musique", sample=val_size, seed=seed)
    return counts
