"""GRPO on real Ray end to end: the training script writes checkpoints, TensorBoard events and curves and
survives SIGKILL losing at most one iteration; swapping GRPO for RLOO is one config value."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_grpo_rllib.py"
#: The smallest run that still plays whole groups through the env and updates: 1 question x 2 rollouts.
TINY = ["--prompts", "1", "--group-size", "2", "--max-new-tokens", "4", "--max-turns", "1", "--num-cpus", "2"]


def start(output: Path, *args: str) -> subprocess.Popen:
    # A session of its own, so that the kill below reaches the script and the Ray processes it started.
    return subprocess.Popen([sys.executable, str(SCRIPT), "--output", str(output), *TINY, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_script_checkpoints_and_resumes_after_sigkill(tmp_path):
    output = tmp_path / "run"
    run = start(output, "--iterations", "8", "--checkpoint-every", "1")
    deadline = time.monotonic() + 240
    try:
        while not (output / "checkpoints" / "iter_000002").is_dir():
            assert run.poll() is None, f"the script ended early:\n{run.stdout.read()}"
            assert time.monotonic() < deadline, "no second checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert list((output / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert (output / "curves.png").stat().st_size > 0
    killed_at = max(int(p.name.split("_")[1]) for p in (output / "checkpoints").glob("iter_*"))

    resumed = start(output, "--iterations", str(killed_at + 1), "--resume")
    log, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, log
    assert f"at iteration {killed_at}" in log, log
    assert f"iter {killed_at + 1:>4}/" in log, log
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == list(range(1, killed_at + 2))  # no iteration lost or doubled
    assert (output / "checkpoints" / f"iter_{killed_at + 1:06d}" / "learner_group").is_dir()
    assert all(math.isfinite(row["losses/entropy"]) for row in rows)


@pytest.mark.slow
def test_rloo_is_one_config_value(ray_cluster):
    from agents.algorithms import get_algorithm
    from agents.grpo import GRPOConfig

    config = (GRPOConfig().training(algorithm="rloo", prompts_per_batch=1, group_size=2)
              .rollouts(max_new_tokens=4, max_turns=1).debugging(seed=0))
    algo = config.build_algo()
    try:
        result = algo.train()
        assert algo.learner_group._learner.loss_config.aggregation == get_algorithm("rloo").aggregation
        assert result["training_iteration"] == 1
        for key in ("charts/episodic_return", "charts/format_ok_rate", "losses/policy_loss", "losses/entropy",
                    "losses/clipfrac", "timers/generate_s", "timers/learner_s"):
            assert math.isfinite(result[key]), key
    finally:
        algo.stop()


def test_config_rejects_uneven_learner_shards():
    from agents.grpo import GRPOConfig

    config = GRPOConfig().training(prompts_per_batch=1, group_size=3).learners(num_learners=2)
    with pytest.raises(ValueError, match="split evenly"):
        config.validate()


def test_config_defaults_are_the_papers():
    from agents.grpo import GRPOConfig

    config = GRPOConfig()
    assert (config.group_size, config.temperature, config.lr, config.clip_ratio) == (5, 1.0, 1e-6, 0.2)
    assert (config.kl_coef, config.entropy_coef, config.grad_clip, config.num_epochs) == (0.001, 0.001, 1.0, 1)
    assert (config.prompts_per_batch, config.algorithm) == (256, "grpo")
