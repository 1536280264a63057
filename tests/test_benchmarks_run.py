"""benchmarks/run.py as a specification: each benchmark's ratios in one table, and a benchmark that fails is shown
as failed and fails the run, never skipped silently. Real subprocesses: synthetic_world.py at a tiny size, and
contract scripts written here that break in the ways a benchmark can."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
#: A real benchmark, small enough for a unit test: two synthetic worlds of a few hundred entities.
TINY_WORLD = ["--add", "tiny_world", "benchmarks/synthetic_world.py --sizes 200 400"]


def run_benchmarks(*args: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    """run.py in a subprocess, as a user runs it; its exit, its output and the JSON it wrote."""
    output = tmp_path / "run.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    done = subprocess.run(
        [sys.executable, str(RUN), *args, "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    return done, json.loads(output.read_text()) if output.exists() else {}


def table_rows(stdout: str, benchmark: str) -> list[list[str]]:
    """The cells of the markdown table's rows for ``benchmark``."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines() if line.startswith("| ")]
    return [row for row in rows if row[0] == benchmark]


def contract_script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text("import sys\n" + body)
    return str(path)


def load_run_module() -> ModuleType:
    """benchmarks/run.py as a module (benchmarks/ is not a package); registered first, as its dataclasses need."""
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_real_benchmark_gives_one_row_per_ratio_with_the_load_average(tmp_path: Path) -> None:
    done, result = run_benchmarks("--only", "tiny_world", *TINY_WORLD, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| benchmark | ratio | value | load average (1, 5, 15 min) | wall s |" in done.stdout
    [row] = table_rows(done.stdout, "tiny_world")
    assert row[1] == "passages/s at 400 / at 200 entities"
    assert float(row[2]) > 0
    assert len(row[3].split(",")) == 3  # the load average when the benchmark finished
    assert "Load average (1, 5, 15 min)" in done.stdout
    [outcome] = result["benchmarks"]
    assert outcome["status"] == "ok"
    assert set(outcome["ratios"]) == {"passages/s at 400 / at 200 entities"}


def test_a_failing_benchmark_is_shown_failed_with_its_stderr_and_fails_the_run(tmp_path: Path) -> None:
    crash = contract_script(tmp_path, "crash", "sys.stderr.write('ValueError: the index is gone\\n')\nsys.exit(3)\n")
    silent = contract_script(tmp_path, "silent", "pass\n")  # exits 0 but writes no --json result
    done, result = run_benchmarks(
        "--only", "tiny_world", "crash", "silent", *TINY_WORLD, "--add", "crash", crash, "--add", "silent", silent,
        tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    [crash_row] = table_rows(done.stdout, "crash")
    assert "**failed**" in crash_row[1]
    assert "exit 3" in crash_row[1]
    assert "ValueError: the index is gone" in crash_row[1]
    [silent_row] = table_rows(done.stdout, "silent")
    assert "**failed**" in silent_row[1]
    assert "no valid --json result" in silent_row[1]
    assert table_rows(done.stdout, "tiny_world")  # the others still ran and are reported
    assert {o["benchmark"]: o["status"] for o in result["benchmarks"]} == {
        "tiny_world": "ok",
        "crash": "failed",
        "silent": "failed",
    }


def test_benchmarks_left_out_are_listed_with_the_reason(tmp_path: Path) -> None:
    run = load_run_module()
    chosen = {b.name: reason for b, reason in run.select(run.parse_args([]), run.REGISTRY)}
    assert "not in quick set" in chosen["learning"]
    assert chosen["large_corpus"] == ""
    done, _ = run_benchmarks("--only", "tiny_world", *TINY_WORLD, "--skip", "tiny_world", tmp_path=tmp_path)
    assert done.returncode == 0
    [row] = table_rows(done.stdout, "tiny_world")
    assert row[1] == "**skipped**: left out with --skip"


def test_a_gpu_benchmark_is_skipped_with_the_reason_without_cuda(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch") is None:  # run.py asks torch; without it, there is nothing to probe
        pytest.skip("torch is not installed")
    # no visible device, so that on a GPU machine too this checks the skip instead of running the benchmark
    done, _ = run_benchmarks("--only", "gpu_learner", tmp_path=tmp_path, CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0, done.stderr
    [row] = table_rows(done.stdout, "gpu_learner")
    assert row[1].startswith("**skipped**: needs a GPU")


def test_list_names_every_benchmark_and_its_command(tmp_path: Path) -> None:
    done, _ = run_benchmarks("--list", tmp_path=tmp_path)
    assert done.returncode == 0
    assert "retrieval: python benchmarks/retrieval.py --service --quick --json PATH" in done.stdout
    for name in ("tokenized_overhead", "rollout", "large_corpus", "synthetic_world", "learner_memory", "gpu_learner"):
        assert f"{name}: python benchmarks/{name}.py --quick --json PATH" in done.stdout
    assert "learning: " in done.stdout and "not in quick set" in done.stdout


def test_an_unknown_name_is_an_error_that_lists_the_known_ones(tmp_path: Path) -> None:
    done, _ = run_benchmarks("--only", "retreival", tmp_path=tmp_path)
    assert done.returncode != 0
    assert "unknown benchmark(s) retreival" in done.stderr
    assert "retrieval" in done.stderr
