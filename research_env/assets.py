"""Paths of the demo data shipped inside the package, so that every registered env works offline
with zero arguments. Samples of the real datasets (see research_env/assets/README.md)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"

#: The four evaluation sets of the paper, as small real samples.
DEMO_DATASETS: dict[str, Path] = {
    "musique": ASSETS / "musique_dev_sample100.jsonl",
    "hotpotqa": ASSETS / "hotpotqa_dev_sample100.jsonl",
    "2wikimultihopqa": ASSETS / "2wikimultihopqa_dev_sample82.jsonl",
    "bamboogle": ASSETS / "bamboogle_test.jsonl",
}

#: The union of the three raw samples' own paragraphs plus 1,000 Wikipedia (Dec 2018) DPR passages.
DEMO_CORPUS = ASSETS / "demo_corpus.jsonl"


def demo_dataset(name: str) -> Path:
    """The shipped sample of a dataset by name (``musique``, ``hotpotqa``, ``2wikimultihopqa``, ``bamboogle``)."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"2wiki": "2wikimultihopqa", "hotpot": "hotpotqa"}
    key = aliases.get(key, key)
    if key not in DEMO_DATASETS:
        raise KeyError(f"no demo dataset {name!r}; shipped: {sorted(DEMO_DATASETS)}")
    return DEMO_DATASETS[key]
