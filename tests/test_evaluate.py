"""scripts/evaluate.py end to end on the four shipped samples: files, keys and ranges, resumability."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import evaluate  # noqa: E402

DATASETS = "musique,hotpotqa,2wiki,bamboogle"
KEYS = ("em", "f1", "acc", "format_ok_rate", "searches_per_question")


def _check_outputs(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert list(results) == DATASETS.split(",")
    for metrics in results.values():
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("em", "f1", "acc", "format_ok_rate"))
        assert set(KEYS) <= set(metrics) and metrics["searches_per_question"] >= 0
    assert (out / "results.md").read_text().count("\n| ") == 5  # header and one row per dataset
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return results


def test_oracle_end_to_end_and_resume(tmp_path):
    out = tmp_path / "oracle"
    evaluate.main(["--datasets", DATASETS, "--agent", "oracle", "--limit", "2", "--output", str(out), "--no-progress"])
    results = _check_outputs(out)
    assert results["musique"]["em"] == 1.0 and results["musique"]["n"] == 2
    evaluate.main(["--datasets", DATASETS, "--agent", "oracle", "--limit", "3", "--output", str(out), "--no-progress"])
    lines = (out / "traces" / "musique.jsonl").read_text().splitlines()
    assert len(lines) == 3 and len({json.loads(line)["question_id"] for line in lines}) == 3
    assert json.loads((out / "results.json").read_text())["musique"]["n"] == 3


@pytest.mark.slow
def test_naive_rag_with_the_tiny_model_end_to_end(tmp_path):
    out = tmp_path / "rag"
    evaluate.main(["--datasets", DATASETS, "--agent", "naive_rag", "--limit", "1", "--batch-size", "1",
                   "--output", str(out), "--no-progress"])
    results = _check_outputs(out)
    assert all(m["searches_per_question"] == 1.0 and m["tokens"] > 0 for m in results.values())


def test_apply_chat_flag_parses_both_ways():
    parser_args = []

    def capture(config, output, progress):
        parser_args.append(config.apply_chat)
        return {}

    original = evaluate.evaluate
    evaluate.evaluate = capture
    try:
        evaluate.main(["--apply-chat", "--output", "x"])
        evaluate.main(["--no-apply-chat", "--output", "x"])
        evaluate.main(["--output", "x"])
    finally:
        evaluate.evaluate = original
    assert parser_args == [True, False, False]
