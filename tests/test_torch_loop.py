"""The plain-PyTorch GRPO loop, on the real envs, rollout engine and loss (no mocks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import research_env  # noqa: F401
from agents.generation.rollout import token_env
from agents.policies.small_vocab import small_qwen2
from agents.training.algorithms import compute_advantages, masked_token_logprobs, token_logprobs
from agents.training.settings import GRPOSettings
from agents.training.torch_loop import TorchGRPO, collect_groups, grpo_update

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(group_size=2, prompts_per_batch=2, num_minibatches=2, max_new_tokens=8, max_tokens=2048, max_turns=1)


def make_trainer(tokenizer, ids, **overrides) -> TorchGRPO:
    config = GRPOSettings(**{**TINY, **overrides})
    envs = [
        token_env(gym.make("ReSearch-MuSiQue-v0", top_k=1), tokenizer, config.rollout_config())
        for _ in range(config.group_size * config.prompts_per_batch)
    ]
    return TorchGRPO.create(small_qwen2(tokenizer, seed=0), tokenizer, envs, ids, config)


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_masked_logprobs_match_token_logprobs(small_vocab):
    tokenizer, _ = small_vocab
    model = small_qwen2(tokenizer, seed=0)
    ids = torch.randint(0, len(tokenizer), (2, 12))
    attention = torch.ones_like(ids)
    mask = (torch.rand(2, 12) < 0.5).float()
    mask[:, 0] = 0
    full, full_entropy = token_logprobs(model, ids, attention, with_entropy=True)
    masked, entropy = masked_token_logprobs(model, ids, attention, mask, with_entropy=True)
    assert torch.allclose(masked, full * mask, atol=1e-5)
    assert torch.allclose(entropy, full_entropy * mask, atol=1e-4)


def test_one_iteration_runs_end_to_end_and_changes_the_weights(small_vocab):
    tokenizer, ids = small_vocab
    trainer = make_trainer(tokenizer, ids, lr=1e-2, drop_zero_advantage=False, entropy_coef=0.1)
    before = weights(trainer.policy)
    metrics = trainer.iteration()
    assert metrics["charts/trained_trajectories"] == 4
    for key in (
        "charts/episodic_return",
        "charts/format_ok_rate",
        "losses/kl",
        "losses/entropy",
        "losses/clipfrac",
        "charts/tokens_per_s",
    ):
        assert key in metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, weights(trainer.policy), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, weights(trainer.reference), strict=True))


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_equal_rewards_in_every_group_give_zero_policy_gradient(small_vocab, algorithm):
    tokenizer, ids = small_vocab
    trainer = make_trainer(
        tokenizer, ids, algorithm=algorithm, kl_coef=0.0, entropy_coef=0.0, drop_zero_advantage=False, lr=1e-2
    )
    config = trainer.config
    rollouts = collect_groups(trainer.envs, trainer.backend, ids[:2], config.group_size, config.rollout_config())
    rewards = torch.tensor([t.reward for t in rollouts.trajectories])
    assert torch.all(rewards == 0)  # a random policy never writes a valid answer: every group is all-equal
    groups = torch.tensor([t.group_id for t in rollouts.trajectories])
    advantages = compute_advantages(config.algorithm, rewards, groups)
    assert torch.all(advantages == 0)
    before = weights(trainer.policy)
    grpo_update(
        trainer.policy, None, trainer.optimizer, rollouts.trajectories, advantages, config, trainer.backend.pad_token_id
    )
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in trainer.policy.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, weights(trainer.policy), strict=True))
    # and with drop_zero_advantage such groups are dropped: nothing is trained on
    dropping = make_trainer(tokenizer, ids, algorithm=algorithm, drop_zero_advantage=True)
    assert dropping.iteration()["charts/trained_trajectories"] == 0


@pytest.mark.slow
def test_train_grpo_torch_script_runs(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "scripts/train_grpo_torch.py",
            "--iterations",
            "1",
            "--prompts",
            "2",
            "--group-size",
            "2",
            "--env",
            "ReSearch-MuSiQue-v0",
            "--no-small-vocab",
            "--no-sft-warmstart",
            "--eval-every",
            "0",
            "--output",
            str(tmp_path / "run"),
            "--max-new-tokens",
            "8",
            "--max-turns",
            "1",
            "--algorithm",
            "rloo",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "iter    1/1 | reward" in result.stdout


def test_warmup_raises_the_rate_linearly_over_iterations_as_the_rllib_schedule_does(small_vocab):
    from agents.training.settings import warmup_factor, warmup_lr

    tokenizer, ids = small_vocab
    trainer = make_trainer(tokenizer, ids, lr=1e-3, warmup_iterations=3)
    rates = [trainer.iteration()["charts/learning_rate"] for _ in range(5)]
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    # RLlib's piecewise schedule of the same warmup, at each iteration's first sampled trajectory
    schedule = warmup_lr(1e-3, 3, trajectories_per_iteration=4)
    for i, rate in enumerate(rates):
        t = min(i * 4, schedule[-1][0])
        (t0, lr0), (t1, lr1) = schedule
        assert rate == pytest.approx(lr0 + (lr1 - lr0) * (t - t0) / (t1 - t0))
    assert warmup_factor(10, 0) == 1.0
