"""GRPO (and its registered relatives) in plain PyTorch, without RLlib: the same envs, rollout engine,
advantages and loss as the RLlib trainer, in one readable loop — rollout groups, advantages over the whole
batch, clipped policy loss with a frozen reference, AdamW, logging. ``scripts/train_grpo_torch.py`` drives it.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from tqdm import tqdm
from transformers import PreTrainedModel

from agents.generation.hf_backend import HFBackend
from agents.generation.rollout import Episode, RolloutConfig, run_episodes
from agents.training.algorithms import (
    LossConfig,
    Trajectory,
    collate,
    compute_advantages,
    get_aggregation,
    get_algorithm,
    masked_token_logprobs,
    minibatch_rows,
    policy_loss,
    trajectory_from_episode,
)
from agents.training.reporting import rollout_charts
from agents.training.settings import GRPOSettings, warmup_factor
from research_env.reward import EpisodeOutcome


@dataclass
class RolloutBatch:
    """The groups of one iteration: trajectory ``i`` belongs to prompt ``group_id``; episodes keep the info."""

    trajectories: list[Trajectory]
    episodes: list[Episode]
    generate_s: float
    env_s: float
    wall_s: float


def collect_groups(
    envs: Sequence[gym.Env], backend: HFBackend, prompt_ids: Sequence[str], group_size: int, config: RolloutConfig
) -> RolloutBatch:
    """``group_size`` episodes per prompt, all generated in one batch; group ids are the prompts' positions."""
    group_of = {qid: g for g, qid in enumerate(prompt_ids)}
    if len(group_of) != len(prompt_ids):
        raise ValueError("prompt_ids must be distinct: a group is every rollout of one prompt")
    started = time.perf_counter()
    order = [q for q in prompt_ids for _ in range(group_size)]
    episodes = list(
        tqdm(run_episodes(envs, backend, order, config), total=len(order), desc="episodes", unit="ep", leave=False)
    )
    wall = time.perf_counter() - started
    trajectories = [trajectory_from_episode(e, group_of[e.question_id]) for e in episodes]
    return RolloutBatch(
        trajectories, episodes, sum(e.generate_s for e in episodes), sum(e.env_s for e in episodes), wall
    )


def grpo_update(
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    optimizer: torch.optim.Optimizer,
    trajectories: Sequence[Trajectory],
    advantages: torch.Tensor,
    config: GRPOSettings,
    pad_token_id: int,
) -> dict[str, float]:
    """``num_epochs`` passes of ``num_minibatches`` clipped-loss steps over the batch, each on whole groups
    (:func:`minibatch_rows`, as the RLlib trainer), its gradient accumulated over micro-batches of
    ``micro_batch_size`` weighted by their rows' share of the loss. Returns mean diagnostics and
    ``charts/trained_trajectories``."""
    loss_config = config.loss_config()
    row_share = get_aggregation(loss_config.aggregation).row_share
    group_ids = [t.group_id for t in trajectories]
    minibatches = minibatch_rows(group_ids, advantages, config.num_minibatches, config.drop_zero_advantage)
    metrics: dict[str, list[float]] = {}
    policy.train()
    for _ in range(config.num_epochs):
        for rows in minibatches:
            batch = collate([trajectories[i] for i in rows], advantages[rows], pad_token_id)
            shares = row_share(batch["loss_mask"])  # [b]
            optimizer.zero_grad()
            loss_sum = 0.0
            for start in range(0, len(rows), config.micro_batch_size):
                micro = {name: value[start : start + config.micro_batch_size] for name, value in batch.items()}
                loss, step_metrics = _micro_batch_loss(policy, reference, micro, loss_config, config.temperature or 1.0)
                weight = shares[start : start + config.micro_batch_size].sum()
                (loss * weight).backward()
                loss_sum += float(loss.detach() * weight)
                for key, value in step_metrics.items():
                    metrics.setdefault(key, []).append(value)
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            optimizer.step()
            metrics.setdefault("losses/loss", []).append(loss_sum)
            metrics.setdefault("losses/grad_norm", []).append(float(grad_norm))
    means = {key: sum(values) / len(values) for key, values in metrics.items()}
    return {**means, "charts/trained_trajectories": float(sum(len(rows) for rows in minibatches))}


def _micro_batch_loss(
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    batch: dict[str, torch.Tensor],
    loss_config: LossConfig,
    temperature: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    mask = batch["loss_mask"]  # [b, T]
    ids, attention = batch["input_ids"], batch["attention_mask"]
    logprobs, entropy = masked_token_logprobs(policy, ids, attention, mask, True, temperature)  # the sampling policy
    ref_logprobs = None
    if reference is not None and loss_config.kl_coef:
        with torch.no_grad():
            ref_logprobs, _ = masked_token_logprobs(reference, ids, attention, mask, temperature=temperature)
    return policy_loss(
        logprobs,
        batch["old_logprobs"],
        batch["advantages"],
        mask,
        loss_config,
        ref_logprobs=ref_logprobs,
        entropy=entropy,
    )


@dataclass
class TorchGRPO:
    """The loop's state: policy, frozen reference, optimizer, sampler, envs and the training prompts.

    Example:
        >>> trainer = TorchGRPO.create(model, tokenizer, envs, train_ids, GRPOSettings(lr=3e-4))  # doctest: +SKIP
        >>> metrics = trainer.iteration()  # doctest: +SKIP
    """

    policy: PreTrainedModel
    reference: PreTrainedModel | None
    tokenizer: Any
    envs: Sequence[gym.Env]
    question_ids: Sequence[str]
    config: GRPOSettings
    optimizer: torch.optim.Optimizer
    backend: HFBackend
    rng: random.Random
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        policy: PreTrainedModel,
        tokenizer: Any,
        envs: Sequence[gym.Env],
        question_ids: Sequence[str],
        config: GRPOSettings,
    ) -> TorchGRPO:
        get_algorithm(config.algorithm)  # fail before any rollout on an unknown name
        config.validate()
        reference = None
        if config.kl_coef:
            reference = copy.deepcopy(policy).eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
        backend = HFBackend(
            policy,
            tokenizer,
            temperature=config.temperature,
            seed=config.seed,
            batch_size=max(1, config.prompts_per_batch * config.group_size),
            max_batch_tokens=config.max_batch_tokens,
        )
        return cls(
            policy,
            reference,
            tokenizer,
            envs,
            list(question_ids),
            config,
            optimizer,
            backend,
            random.Random(config.seed),
        )

    def iteration(self) -> dict[str, float]:
        """One GRPO iteration, in the order of the paper's algorithm; returns CleanRL-named metrics."""
        config, started = self.config, time.perf_counter()
        # 1. rollout: group_size samples of each prompt at temperature 1, old log-probs from the sampler
        n_prompts = min(config.prompts_per_batch, len(self.question_ids))
        prompts = self.rng.sample(list(self.question_ids), n_prompts)
        rollouts = collect_groups(self.envs, self.backend, prompts, config.group_size, config.rollout_config())
        trajectories = rollouts.trajectories
        # 2. advantages over the whole batch (every group is complete here)
        rewards = torch.tensor([t.reward for t in trajectories])  # [N]
        group_ids = torch.tensor([t.group_id for t in trajectories])  # [N]
        advantages = compute_advantages(get_algorithm(config.algorithm).advantage, rewards, group_ids)  # [N]
        # 3. update: minibatches of whole groups, clipped loss with KL to the reference and the entropy bonus
        learner_started = time.perf_counter()
        # The warmup counts iterations, as the RLlib trainer's schedule does.
        learning_rate = config.lr * warmup_factor(self.step, config.warmup_iterations)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        update = grpo_update(
            self.policy, self.reference, self.optimizer, trajectories, advantages, config, self.backend.pad_token_id
        )
        learner_s = time.perf_counter() - learner_started
        # 4. logging, in the RLlib trainer's vocabulary
        self.step += 1
        generated = sum(e.generated_tokens for e in rollouts.episodes)
        metrics = {
            "iteration": float(self.step),
            **rollout_charts(
                trajectories,
                advantages,
                trained=int(update.pop("charts/trained_trajectories")),
                generated_tokens=generated,
                sample_s=rollouts.wall_s,
            ),
            "charts/learning_rate": learning_rate,
            "timers/generate_s": rollouts.generate_s,
            "timers/env_s": rollouts.env_s,
            "timers/sample_s": rollouts.wall_s,
            "timers/learner_s": learner_s,
            "timers/iteration_s": time.perf_counter() - started,
            **update,
        }
        self.history.append(metrics)
        return metrics


@dataclass
class Evaluation:
    """Per-sample outcomes of a fixed evaluation set, and their means with standard errors."""

    rewards: list[float]
    format_ok: list[float]
    f1: list[float]
    searches: list[float] = field(default_factory=list)

    @staticmethod
    def _mean_se(values: list[float]) -> tuple[float, float]:
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / max(1, n - 1)
        return mean, math.sqrt(var / n)

    def summary(self) -> dict[str, float]:
        reward, reward_se = self._mean_se(self.rewards)
        fmt, fmt_se = self._mean_se(self.format_ok)
        f1, f1_se = self._mean_se(self.f1)
        summary = {
            "n": len(self.rewards),
            "reward": reward,
            "reward_se": reward_se,
            "format_ok": fmt,
            "format_ok_se": fmt_se,
            "f1": f1,
            "f1_se": f1_se,
        }
        if self.searches:
            summary["searches"], summary["searches_se"] = self._mean_se(self.searches)
        return summary


def evaluate_policy(
    model: PreTrainedModel,
    tokenizer: Any,
    envs: Sequence[gym.Env],
    question_ids: Sequence[str],
    samples: int,
    config: RolloutConfig,
    temperature: float = 1.0,
    seed: int = 1234,
) -> Evaluation:
    """``samples`` episodes per question from a sampler with its own seed, separate from training's samples.

    The same seed before and after training gives common random numbers, which makes the difference of the
    two means less noisy than either mean alone.
    """
    model.eval()
    backend = HFBackend(
        model, tokenizer, temperature=temperature, seed=seed, batch_size=max(1, len(question_ids) * samples)
    )
    order = [q for q in question_ids for _ in range(samples)]
    episodes = list(run_episodes(envs, backend, order, config))
    outcomes = [EpisodeOutcome.from_info(e.info) for e in episodes]
    return Evaluation(
        [float(e.reward) for e in episodes],
        [float(o.format_ok) for o in outcomes],
        [o.f1 for o in outcomes],
        [float(e.info["num_searches"]) for e in episodes],
    )
