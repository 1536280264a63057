"""The warm start of a GRPO run (--small-vocab, --sft-warmstart) through the real training script on real
Ray: the starting policy is built once into DIR/policy, trained on by RLlib, and reused on --resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_grpo_rllib.py"
ARGS = [
    "--small-vocab",
    "--sft-warmstart",
    "--sft-epochs",
    "2",
    "--questions",
    "2",
    "--sft-questions",
    "4",
    "--prompts",
    "2",
    "--group-size",
    "2",
    "--top-k",
    "1",
    "--max-new-tokens",
    "24",
    "--max-turns",
    "3",
    "--minibatches",
    "2",
    "--warmup-iterations",
    "2",
    "--lr",
    "1e-3",
    "--num-cpus",
    "2",
    "--env",
    "ReSearch-MuSiQue-v0",
    "--eval-every",
    "0",
    "--noisy-copies",
    "1",
    "--no-search-share",
    "0",
    "--no-split-names",
    "--no-drop-zero-advantage",
    "--sft-batch-size",
    "4",
]


def run(output: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(output), *ARGS, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_small_vocab_sft_warm_start_trains_and_is_reused_on_resume(tmp_path):
    from transformers import AutoConfig

    from research_env.tokenizer import load_tokenizer

    output = tmp_path / "run"
    log = run(output, "--iterations", "1")
    assert "warm start: SFT on 8 oracle traces of 4 questions" in log, log  # 4 clean + 4 noisy copies
    assert "sft epoch 2/2" in log
    policy = output / "policy"
    tokenizer = load_tokenizer(policy)
    # a BPE trained on 4 questions' traces stops short of 8,192 merges; the model is sized to it
    assert len(tokenizer) < 8192 and AutoConfig.from_pretrained(policy).vocab_size == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("</search>") != tokenizer.unk_token_id  # protocol tags are tokens
    weights = (policy / "model.safetensors").read_bytes()

    log = run(output, "--iterations", "2", "--resume")
    assert f"warm start: reusing {policy}" in log and "sft epoch" not in log, log
    assert (policy / "model.safetensors").read_bytes() == weights  # the reference policy did not change
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2]
    # warmup over 2 iterations: the rate set for the update after iteration 1 is lower than the full --lr
    assert rows[0]["charts/learning_rate"] < rows[1]["charts/learning_rate"] == pytest.approx(1e-3)
