"""Both trainers have one command line (derived from GRPOSettings): the same shared flags, --help at once, and
bad values refused before any model, index or Ray cluster starts."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"rllib": ROOT / "scripts" / "train_grpo_rllib.py", "torch": ROOT / "scripts" / "train_grpo_torch.py"}
#: The flags only the RLlib trainer has (its "Ray RLlib" and "learner memory" groups).
RLLIB_ONLY = {
    "--resume",
    "--checkpoint-every",
    "--keep-checkpoints",
    "--num-learners",
    "--num-gpus-per-learner",
    "--num-env-runners",
    "--num-gpus-per-env-runner",
    "--rollout-backend",
    "--tensor-parallel-size",
    "--lora",
    "--lora-rank",
    "--ray-address",
    "--ray-all-interfaces",
    "--num-cpus",
    "--dtype",
    "--gradient-checkpointing",
    "--strategy",
}


def _run(script: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPTS[script]), *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done, time.perf_counter() - started


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text)) - {"--help"}


def test_both_trainers_list_the_same_shared_flags_and_answer_help_at_once():
    (rllib, rllib_s), (torch, torch_s) = _run("rllib", "--help"), _run("torch", "--help")
    assert rllib.returncode == torch.returncode == 0
    assert rllib_s < 2 and torch_s < 2, (rllib_s, torch_s)
    shared = _flags(torch.stdout)
    assert _flags(rllib.stdout) == shared | RLLIB_ONLY
    assert {
        "--env",
        "--dataset",
        "--corpus",
        "--output",
        "--warmup-iterations",
        "--drop-zero-advantage",
        "--wandb",
        "--wandb-mode",
    } <= shared


@pytest.mark.slow  # each case imports torch in a fresh interpreter (a few seconds on a busy machine)
@pytest.mark.parametrize(
    "script, flags, message",
    [
        ("rllib", ["--group-size", "1"], "group_size must be >= 2"),
        ("torch", ["--group-size", "1"], "group_size must be >= 2"),
        ("rllib", ["--top-k", "0"], "--top-k must be >= 1"),
        ("torch", ["--dataset", "/no/such/file.jsonl"], "--dataset /no/such/file.jsonl: no such file"),
    ],
)
def test_bad_values_fail_before_start_up(tmp_path, script, flags, message):
    done, seconds = _run(script, "--output", str(tmp_path / "run"), *flags)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert seconds < 20 and not (tmp_path / "run").exists()  # start-up (model, index, Ray) takes minutes
