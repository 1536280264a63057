"""scripts/evaluate.py end to end on the four shipped samples: files, keys and ranges, resumability, one directory
per run so that agents never mix, and flags that fail before anything loads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import evaluate  # noqa: E402

from agents.evaluation import run as evaluate_run  # noqa: E402

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


def _runs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/config.json"))


def test_oracle_end_to_end_and_resume(tmp_path):
    out = tmp_path / "oracle"
    evaluate.main(["--datasets", DATASETS, "--agent", "oracle", "--limit", "2", "--output", str(out), "--no-progress"])
    results = _check_outputs(out)
    assert results["musique"]["em"] == 1.0 and results["musique"]["n"] == 2
    evaluate.main(["--datasets", DATASETS, "--agent", "oracle", "--limit", "3", "--output", str(out), "--no-progress"])
    [run] = _runs(out)  # the same configuration resumes its own run
    assert run.name.startswith("oracle_no-model_")
    lines = (run / "traces" / "musique.jsonl").read_text().splitlines()
    assert len(lines) == 3 and len({json.loads(line)["question_id"] for line in lines}) == 3
    assert json.loads((out / "results.json").read_text())["musique"]["n"] == 3
    assert len(json.loads((run / "config.json").read_text())["calls"]) == 2


def test_a_rerun_on_fewer_datasets_keeps_the_others(tmp_path):
    evaluate.main(
        [
            "--datasets",
            "musique,bamboogle",
            "--agent",
            "oracle",
            "--limit",
            "1",
            "--output",
            str(tmp_path),
            "--no-progress",
        ]
    )
    evaluate.main(
        ["--datasets", "hotpotqa", "--agent", "oracle", "--limit", "1", "--output", str(tmp_path), "--no-progress"]
    )
    [run] = _runs(tmp_path)
    for results in (run / "results.json", tmp_path / "results.json"):
        assert list(json.loads(results.read_text())) == ["musique", "bamboogle", "hotpotqa"]
    assert (run / "results.md").read_text().count("\n| ") == 4


@pytest.mark.slow
def test_another_agent_into_the_same_output_cannot_mix_results(tmp_path):
    common = ["--datasets", "musique", "--limit", "2", "--output", str(tmp_path), "--no-progress"]
    evaluate.main([*common, "--agent", "oracle"])
    with pytest.warns(evaluate_run.RandomModelWarning, match="RANDOM"):
        evaluate.main([*common, "--agent", "naive_generation", "--batch-size", "2"])
    oracle, naive = sorted(_runs(tmp_path), key=lambda run: run.name)[::-1]  # "oracle_..." > "naive_..."
    assert oracle.name.startswith("oracle_") and naive.name.startswith("naive_generation_tiny-qwen2_")
    naive_rows = [json.loads(line) for line in (naive / "traces" / "musique.jsonl").read_text().splitlines()]
    assert len(naive_rows) == 2 and all(row["details"]["agent"] == "naive_generation" for row in naive_rows)
    assert json.loads((oracle / "results.json").read_text())["musique"]["em"] == 1.0
    assert json.loads((naive / "results.json").read_text())["musique"]["em"] < 1.0
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads((naive / "results.json").read_text())
    assert "naive_generation (tiny-qwen2)" in (tmp_path / "results.md").read_text()
    # A trace line written under another configuration is never counted as this run's.
    with (oracle / "traces" / "musique.jsonl").open("a") as traces:
        traces.write(json.dumps({**naive_rows[0], "question_id": "planted"}) + "\n")
    key = json.loads((oracle / "config.json").read_text())["run_key"]
    assert "planted" not in evaluate_run.read_traces(oracle / "traces" / "musique.jsonl", key)


def test_a_model_rewritten_in_place_is_another_run(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    (model / "model.safetensors").write_bytes(b"weights")
    config = evaluate_run.EvalConfig(datasets=["musique"], agent="research", model=str(model))
    before = config.key()
    assert evaluate_run.EvalConfig(datasets=["bamboogle"], agent="research", model=str(model), limit=3).key() == before
    os.utime(model / "model.safetensors", ns=(1, 10**18))  # new weights written into the same directory
    assert config.key() != before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--limit", "0"], "--limit"),
        (["--top-k", "-3"], "--top-k"),
        (["--agent", "naive_rag", "--template", "re_search_template"], "template applies to the research agent"),
        (["--base-url", "http://127.0.0.1:1/v1"], "base_url and api_model go together"),
        (["--datasets", " , "], "--datasets is empty"),
        (["--model", "/no/such/checkpoint"], "/no/such/checkpoint: no such directory"),
    ],
)
def test_bad_flags_fail_before_anything_loads(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([*flags, "--output", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_naive_rag_with_the_tiny_model_end_to_end(tmp_path):
    out = tmp_path / "rag"
    with pytest.warns(evaluate_run.RandomModelWarning):
        evaluate.main(
            [
                "--datasets",
                DATASETS,
                "--agent",
                "naive_rag",
                "--limit",
                "1",
                "--batch-size",
                "1",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
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
