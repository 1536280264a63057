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
from transformers import PreTrainedModel

from agents.algorithms import (
    LossConfig,
    Trajectory,
    collate,
    compute_advantages,
    get_algorithm,
    masked_token_logprobs,
    policy_loss,
    trajectory_from_episode,
)
from agents.hf_backend import HFBackend
from agents.rollout import Episode, RolloutConfig, run_episodes
from research_env.reward import EpisodeOutcome


@dataclass
class TorchGRPOConfig:
    """Defaults are SPEC §6's where they apply to a loop this size (group 5, temperature 1, clip 0.2,
    KL and entropy coefficients 0.001, grad clip 1.0, one epoch per batch)."""

    algorithm: str = "grpo"  # any key of agents.algorithms.ALGORITHMS
    group_size: int = 5
    prompts_per_iteration: int = 16
    lr: float = 1e-6
    warmup_steps: int = 0  # optimizer steps of linear warmup, then constant
    clip_ratio: float = 0.2
    kl_coef: float = 0.001
    entropy_coef: float = 0.001
    max_grad_norm: float = 1.0
    minibatches: int = 2  # optimizer steps per iteration (per epoch)
    update_epochs: int = 1
    drop_zero_advantage: bool = True  # a group with equal rewards only adds KL/entropy noise and dilutes the mean
    temperature: float = 1.0
    max_new_tokens: int = 256
    max_tokens: int = 4096
    max_turns: int | None = 8
    seed: int = 0

    def rollout_config(self) -> RolloutConfig:
        return RolloutConfig(max_new_tokens=self.max_new_tokens, max_tokens=self.max_tokens, max_turns=self.max_turns)

    def loss_config(self) -> LossConfig:
        return LossConfig(clip_ratio=self.clip_ratio, kl_coef=self.kl_coef, entropy_coef=self.entropy_coef,
                          aggregation=get_algorithm(self.algorithm).aggregation, max_response_tokens=self.max_tokens)


@dataclass
class RolloutBatch:
    """The groups of one iteration: trajectory ``i`` belongs to prompt ``group_id``; episodes keep the info."""

    trajectories: list[Trajectory]
    episodes: list[Episode]
    generate_s: float
    env_s: float
    wall_s: float


def collect_groups(envs: Sequence[gym.Env], backend: HFBackend, prompt_ids: Sequence[str], group_size: int,
                   config: RolloutConfig) -> RolloutBatch:
    """``group_size`` episodes per prompt, all generated in one batch; group ids are the prompts' positions."""
    group_of = {qid: g for g, qid in enumerate(prompt_ids)}
    if len(group_of) != len(prompt_ids):
        raise ValueError("prompt_ids must be distinct: a group is every rollout of one prompt")
    started = time.perf_counter()
    episodes = list(run_episodes(envs, backend, [q for q in prompt_ids for _ in range(group_size)], config))
    wall = time.perf_counter() - started
    trajectories = [trajectory_from_episode(e, group_of[e.question_id]) for e in episodes]
    return RolloutBatch(trajectories, episodes, sum(e.generate_s for e in episodes), sum(e.env_s for e in episodes),
                        wall)


def grpo_update(policy: PreTrainedModel, reference: PreTrainedModel | None, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None, trajectories: Sequence[Trajectory],
                advantages: torch.Tensor, config: TorchGRPOConfig, pad_token_id: int) -> dict[str, float]:
    """``update_epochs`` passes of ``minibatches`` clipped-loss steps over the batch; mean diagnostics."""
    loss_config = config.loss_config()
    rng = random.Random(config.seed)
    metrics: dict[str, list[float]] = {}
    policy.train()
    for _ in range(config.update_epochs):
        order = rng.sample(range(len(trajectories)), len(trajectories))
        for chunk in (order[i :: config.minibatches] for i in range(min(config.minibatches, len(order)))):
            batch = collate([trajectories[i] for i in chunk], advantages[chunk], pad_token_id)
            mask = batch["loss_mask"]  # [b, T]
            logprobs, entropy = masked_token_logprobs(policy, batch["input_ids"], batch["attention_mask"], mask,
                                                      with_entropy=True)
            ref_logprobs = None
            if reference is not None and config.kl_coef:
                with torch.no_grad():
                    ref_logprobs, _ = masked_token_logprobs(reference, batch["input_ids"], batch["attention_mask"],
                                                            mask)
            loss, step_metrics = policy_loss(logprobs, batch["old_logprobs"], batch["advantages"], mask, loss_config,
                                             ref_logprobs=ref_logprobs, entropy=entropy)
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step_metrics.update({"losses/loss": loss.item(), "losses/grad_norm": float(grad_norm)})
            for key, value in step_metrics.items():
                metrics.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in metrics.items()}


@dataclass
class TorchGRPO:
    """The loop's state: policy, frozen reference, optimizer, sampler, envs and the training prompts.

    Example:
        >>> trainer = TorchGRPO.create(model, tokenizer, envs, train_ids, TorchGRPOConfig(lr=3e-4))  # doctest: +SKIP
        >>> metrics = trainer.iteration()  # doctest: +SKIP
    """

    policy: PreTrainedModel
    reference: PreTrainedModel | None
    tokenizer: Any
    envs: Sequence[gym.Env]
    question_ids: Sequence[str]
    config: TorchGRPOConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    backend: HFBackend
    rng: random.Random
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def create(cls, policy: PreTrainedModel, tokenizer: Any, envs: Sequence[gym.Env], question_ids: Sequence[str],
               config: TorchGRPOConfig) -> TorchGRPO:
        get_algorithm(config.algorithm)  # fail before any rollout on an unknown name
        reference = None
        if config.kl_coef:
            reference = copy.deepcopy(policy).eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
        warmup = max(1, config.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        backend = HFBackend(policy, tokenizer, temperature=config.temperature, seed=config.seed,
                            batch_size=max(1, config.prompts_per_iteration * config.group_size))
        return cls(policy, reference, tokenizer, envs, list(question_ids), config, optimizer, scheduler, backend,
                   random.Random(config.seed))

    def iteration(self) -> dict[str, float]:
        """One GRPO iteration, in the order of the paper's algorithm; returns CleanRL-named metrics."""
        config, started = self.config, time.perf_counter()
        # 1. rollout: group_size samples of each prompt at temperature 1, old log-probs from the sampler
        n_prompts = min(config.prompts_per_iteration, len(self.question_ids))
        prompts = self.rng.sample(list(self.question_ids), n_prompts)
        rollouts = collect_groups(self.envs, self.backend, prompts, config.group_size, config.rollout_config())
        trajectories = rollouts.trajectories
        # 2. advantages over the whole batch (every group is complete here)
        rewards = torch.tensor([t.reward for t in trajectories])  # [N]
        group_ids = torch.tensor([t.group_id for t in trajectories])  # [N]
        advantages = compute_advantages(get_algorithm(config.algorithm).advantage, rewards, group_ids)  # [N]
        keep = list(range(len(trajectories)))
        if config.drop_zero_advantage:
            keep = [i for i in keep if advantages[i].abs() > 1e-8]
        # 3. update: minibatches of the clipped loss with KL to the reference and the entropy bonus
        learner_started = time.perf_counter()
        loss_metrics: dict[str, float] = {}
        if keep:
            loss_metrics = grpo_update(self.policy, self.reference, self.optimizer, self.scheduler,
                                       [trajectories[i] for i in keep], advantages[keep], config,
                                       self.backend.pad_token_id)
        learner_s = time.perf_counter() - learner_started
        # 4. logging
        self.step += 1
        stats = [t.stats for t in trajectories]
        generated = sum(e.generated_tokens for e in rollouts.episodes)
        metrics = {
            "iteration": float(self.step),
            "charts/reward": _mean(s["reward"] for s in stats),
            "charts/f1": _mean(s["f1"] for s in stats),
            "charts/format_ok": _mean(s["format_ok"] for s in stats),
            "charts/searches": _mean(s["searches"] for s in stats),
            "charts/response_tokens": _mean(s["response_tokens"] for s in stats),
            "charts/truncated": _mean(s["truncated"] for s in stats),
            "charts/kept_trajectories": float(len(keep)),
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
            "charts/tokens_per_s": generated / max(rollouts.wall_s, 1e-9),
            "time/generate_s": rollouts.generate_s,
            "time/env_s": rollouts.env_s,
            "time/learner_s": learner_s,
            "time/iteration_s": time.perf_counter() - started,
            **loss_metrics,
        }
        self.history.append(metrics)
        return metrics


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


@dataclass
class Evaluation:
    """Per-sample outcomes of a fixed evaluation set, and their means with standard errors."""

    rewards: list[float]
    format_ok: list[float]
    f1: list[float]

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
        return {"n": len(self.rewards), "reward": reward, "reward_se": reward_se, "format_ok": fmt,
                "format_ok_se": fmt_se, "f1": f1, "f1_se": f1_se}


def evaluate_policy(model: PreTrainedModel, tokenizer: Any, envs: Sequence[gym.Env], question_ids: Sequence[str],
                    samples: int, config: RolloutConfig, temperature: float = 1.0, seed: int = 1234) -> Evaluation:
    """``samples`` episodes per question from a sampler with its own seed, separate from training's samples.

    The same seed before and after training gives common random numbers, which makes the difference of the
    two means less noisy than either mean alone.
    """
    model.eval()
    backend = HFBackend(model, tokenizer, temperature=temperature, seed=seed,
                        batch_size=max(1, len(question_ids) * samples))
    order = [q for q in question_ids for _ in range(samples)]
    episodes = list(run_episodes(envs, backend, order, config))
    outcomes = [EpisodeOutcome.from_info(e.info) for e in episodes]
    return Evaluation([float(e.reward) for e in episodes], [float(o.format_ok) for o in outcomes],
                      [o.f1 for o in outcomes])
