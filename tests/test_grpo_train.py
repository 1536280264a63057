"""GRPO on real Ray end to end: the training script writes checkpoints, TensorBoard events and curves,
survives SIGKILL losing at most one iteration, stops cleanly on SIGINT/SIGTERM, resumes past an unreadable
checkpoint, and keeps its Ray instance on 127.0.0.1; swapping GRPO for RLOO is one config value."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_grpo_rllib.py"


def start(output: Path, *args: str) -> subprocess.Popen:
    # A session of its own, so that the kill below reaches the script and the Ray processes it started; SIGINT at
    # its default disposition, as in a terminal (a background shell would start it ignored).
    # Without conftest's loopback setting for Ray: the script must keep its Ray instance on 127.0.0.1 by itself.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--output", str(output), *TINY_RUN, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL) and None,
    )


@contextlib.contextmanager
def running(output: Path, *args: str) -> Iterator[subprocess.Popen]:
    """The script running; killed with its Ray processes on leaving, unless it ended by itself."""
    run = start(output, *args)
    try:
        yield run
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()


def wait_for(run: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_dir():
        assert run.poll() is None, f"the script ended early:\n{run.stdout.read()}"
        assert time.monotonic() < deadline, f"no {path.name} within {timeout} s"
        time.sleep(0.2)


def listening_addresses(pid: int) -> set[str]:
    """The addresses that the process and its descendants (Ray's GCS, raylet, agents, workers) listen on."""
    import psutil

    root = psutil.Process(pid)
    pids = {pid} | {child.pid for child in root.children(recursive=True)}
    return {c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}


@pytest.mark.slow
def test_sigint_stops_after_the_iteration_with_a_checkpoint_and_resume_skips_an_unreadable_one(tmp_path):
    output = tmp_path / "run"
    with running(output, "--iterations", "60", "--checkpoint-every", "1") as run:
        wait_for(run, output / "checkpoints" / "iter_000001")
        addresses = listening_addresses(run.pid)
        assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addresses
        run.send_signal(signal.SIGINT)
        log, _ = run.communicate(timeout=240)
    assert run.returncode == 130, log
    assert "Traceback" not in log and "stopped by SIGINT" in log, log
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    stopped_at = rows[-1]["iteration"]
    assert stopped_at < 60 and (output / "checkpoints" / f"iter_{stopped_at:06d}").is_dir()  # the last one saved

    # A checkpoint truncated by a crash or a full disk: named, skipped, and the one before it is used.
    newest = output / "checkpoints" / f"iter_{stopped_at:06d}"
    state = newest / "learner_group" / "learner" / "state.pkl"
    state.write_bytes(state.read_bytes()[:1000])
    resumed = start(output, "--iterations", str(stopped_at), "--resume")
    log, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, log
    assert f"checkpoint {newest} is unreadable" in log, log
    assert f"at iteration {stopped_at - 1}" in log, log


@pytest.mark.slow
def test_a_second_sigterm_stops_at_once(tmp_path):
    output = tmp_path / "run"
    with running(output, "--iterations", "60", "--checkpoint-every", "1") as run:
        wait_for(run, output / "checkpoints" / "iter_000001")
        run.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        run.send_signal(signal.SIGTERM)
        log, _ = run.communicate(timeout=120)
    assert run.returncode != 0 and "SIGTERM received twice" in log, log
    assert (output / "checkpoints" / "iter_000001").is_dir()  # what was saved is left intact


@pytest.mark.slow
def test_script_checkpoints_and_resumes_after_sigkill(tmp_path):
    output = tmp_path / "run"
    with running(output, "--iterations", "8", "--checkpoint-every", "1") as run:
        wait_for(run, output / "checkpoints" / "iter_000002")  # then killed with SIGKILL
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
    from agents.training.algorithms import get_algorithm
    from agents.training.rllib import GRPOConfig

    config = (
        GRPOConfig()
        .training(algorithm="rloo", prompts_per_batch=1, group_size=2)
        .rollouts(max_new_tokens=4, max_turns=1)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        assert algo.learner_group._learner.loss_config.aggregation == get_algorithm("rloo").aggregation
        assert result["training_iteration"] == 1
        for key in (
            "charts/episodic_return",
            "charts/format_ok_rate",
            "losses/policy_loss",
            "losses/entropy",
            "losses/clipfrac",
            "timers/generate_s",
            "timers/learner_s",
        ):
            assert math.isfinite(result[key]), key
    finally:
        algo.stop()


@pytest.mark.slow
def test_remote_env_runners_sample_the_groups_and_receive_the_learners_weights(ray_cluster):
    from ray.rllib.core import DEFAULT_MODULE_ID

    from agents.training.rllib import GRPOConfig

    config = (
        GRPOConfig()
        .training(prompts_per_batch=2, group_size=2, lr=1e-2)
        .rollouts(max_new_tokens=4, max_turns=1)
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=0.5)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:

        def weights(runner) -> dict[str, torch.Tensor]:
            return {k: v.clone() for k, v in runner.module.get_state().items()}

        initial = algo.env_runner_group.foreach_env_runner(weights, local_env_runner=False)
        algo.train()
        learner = algo.learner_group._learner.module[DEFAULT_MODULE_ID].get_state()
        synced = algo.env_runner_group.foreach_env_runner(weights, local_env_runner=False)
        plans = algo.env_runner_group.foreach_env_runner(lambda r: len(r.envs), local_env_runner=False)
    finally:
        algo.stop()
    assert len(synced) == 2 and plans == [2, 2]  # one group of 2 rollouts on each remote runner
    assert any(not torch.equal(initial[0][k], learner[k]) for k in learner), "the update changed nothing"
    for state in synced:
        assert state.keys() == learner.keys()
        assert all(torch.equal(state[k], learner[k]) for k in learner), "a runner samples with stale weights"


def test_learner_shards_pad_to_equal_shards_whose_weights_give_the_batch_loss():
    from agents.training.rllib.algorithm import learner_shards

    loss_mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=torch.float32)
    batch = {
        "input_ids": torch.arange(12).reshape(3, 4),
        "loss_mask": loss_mask,
        "advantages": torch.tensor([1.0, -1.0, 0.5]),
    }
    for aggregation, expected in (("token_mean", [2 / 7, 4 / 7, 1 / 7, 0.0]), ("constant_norm", [1 / 3] * 3 + [0.0])):
        shards = learner_shards(dict(batch), aggregation, num_learners=2)
        rows = [shard.policy_batches["default_policy"] for shard in shards]
        assert [len(r) for r in rows] == [2, 2]
        weights = np.concatenate([r["loss_weight"] for r in rows])
        np.testing.assert_allclose(weights, 2 * np.array(expected), rtol=1e-6)  # DDP averages over 2 learners
        assert rows[1]["loss_mask"][1].sum() == 0  # the padding row carries no loss


def test_minibatches_hold_whole_groups_and_drop_zero_advantages():
    from agents.training.algorithms import minibatch_rows

    group_ids = [0, 0, 1, 1, 2, 2]
    advantages = torch.tensor([0.7, -0.7, 0.0, 0.0, 1.0, -1.0])
    assert minibatch_rows(group_ids, advantages, 2, drop_zero_advantage=True) == [[0, 1, 4, 5]]  # group 1: all zero
    assert minibatch_rows(group_ids, advantages, 2, drop_zero_advantage=False) == [[0, 1, 4, 5], [2, 3]]


def test_config_rejects_minibatches_that_cannot_hold_whole_groups_and_duplicate_questions():
    from agents.training.rllib import GRPOConfig

    with pytest.raises(ValueError, match="num_minibatches"):
        GRPOConfig().training(prompts_per_batch=2, num_minibatches=3).validate()
    with pytest.raises(ValueError, match="duplicates"):
        GRPOConfig().training(question_ids=["q1", "q1"]).validate()


def test_config_defaults_are_the_papers():
    from agents.training.rllib import GRPOConfig

    config = GRPOConfig()
    assert (config.group_size, config.temperature, config.lr, config.clip_ratio) == (5, 1.0, 1e-6, 0.2)
    assert (config.kl_coef, config.entropy_coef, config.grad_clip, config.num_epochs) == (0.001, 0.001, 1.0, 1)
    assert (config.prompts_per_batch, config.algorithm) == (256, "grpo")
