"""QA datasets as users already hold them in Hugging Face ``datasets``: a ``Dataset`` or ``DatasetDict`` object,
or a directory written by ``save_to_disk``, in any of the supported record formats (FlashRAG, raw MuSiQue,
HotpotQA or 2WikiMultihopQA), as a :class:`~research_env.data.QADataset`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from research_env.data import FORMATS, DatasetFormatError, QADataset, format_of_keys, validate_rows

#: Splits tried, in order, when a DatasetDict is given without ``split`` (evaluation sets first).
DEFAULT_SPLITS = ("dev", "validation", "test", "train")
_SPLIT = re.compile(r"^(?P<name>[^\[\]]*)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def is_hf_dataset(dataset: Any) -> bool:
    """A ``datasets.Dataset``/``DatasetDict``, or a directory written by ``save_to_disk`` of either."""
    import datasets

    if isinstance(dataset, (datasets.Dataset, datasets.DatasetDict)):
        return True
    return isinstance(dataset, (str, os.PathLike)) and any(
        (Path(dataset).expanduser() / name).is_file() for name in ("state.json", "dataset_dict.json")
    )


def load_hf_qa_dataset(dataset: Any, split: str | None = None, fmt: str | None = None) -> QADataset:
    """A :class:`QADataset` over a Hugging Face dataset (see :func:`is_hf_dataset`), its format detected from
    the columns. ``split`` names a split of a ``DatasetDict`` and may slice it: ``"dev"``, ``"train[:100]"``,
    ``"[10:20]"`` (a plain ``Dataset`` can only be sliced)."""
    import datasets

    source = str(dataset) if isinstance(dataset, (str, os.PathLike)) else type(dataset).__name__
    if isinstance(dataset, (str, os.PathLike)):
        dataset = datasets.load_from_disk(str(Path(dataset).expanduser()))
    match = _SPLIT.match(split or "")
    if match is None:
        raise ValueError(f"split {split!r} is not NAME, NAME[start:stop] or [start:stop]")
    name = match["name"]
    if isinstance(dataset, datasets.DatasetDict):
        name = name or next(
            (s for s in DEFAULT_SPLITS if s in dataset), "" if len(dataset) != 1 else next(iter(dataset))
        )
        if name not in dataset:
            raise KeyError(f"{source} has the splits {sorted(dataset)}; choose one with split=NAME")
        table, source = dataset[name], f"{source}[{name}]"
    elif name and name != "train":
        raise ValueError(f"{source} is a single Dataset: split={split!r} can only slice it, e.g. '[:100]'")
    else:
        table = dataset
    if match["start"] or match["stop"]:
        table = table.select(
            range(len(table))[slice(int(match["start"] or 0), int(match["stop"]) if match["stop"] else None)]
        )
    fmt = fmt or format_of_keys(set(table.column_names), source)
    if fmt not in FORMATS:
        raise DatasetFormatError(f"unknown format {fmt!r}; supported: {FORMATS}")
    if len(table) == 0:
        raise DatasetFormatError(f"{source} holds no records")
    validate_rows(table, fmt, Path(source))
    return QADataset(table, fmt, source)
