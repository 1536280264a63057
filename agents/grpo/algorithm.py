"""GRPO (and the algorithms registered beside it) as an RLlib Algorithm: sample whole groups on the env
runners, compute group advantages on the driver, where every group is complete, update the learners on
even shards, sync the weights back."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import DEFAULT_OPTIMIZER, LR_KEY
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)

from agents.algorithms import Trajectory, collate, compute_advantages, get_algorithm
from agents.grpo.config import GRPOConfig

#: Driver-side diagnostics: CleanRL's names where CleanRL has one.
CHARTS = ("episodic_return", "f1", "format_ok_rate", "searches_per_episode", "response_length", "truncated_rate")
LOSSES = ("policy_loss", "approx_kl", "clipfrac", "kl", "entropy")


class GRPO(Algorithm):
    """``training_step``: one batch of ``prompts_per_batch`` questions, each played ``group_size`` times.

    1. The driver draws the questions (without replacement, from ``(seed, iteration)``, so a resumed run
       draws what the interrupted one would have) and deals whole groups to the env runners.
    2. Advantages come from ``compute_advantages`` over the complete groups, one scalar per trajectory.
    3. Whole groups are dealt into ``num_minibatches`` optimizer steps (zero-advantage rows left out when
       ``drop_zero_advantage``); each is padded and split into ``num_learners`` equal shards by
       :func:`learner_shards` and passed pre-sharded to ``learner_group.update``: RLlib's own episode
       sharding could split groups and make uneven shards, and uneven shards make DDP hang.
    4. The learners' weights (CPU tensors) go to the env runners.
    """

    config: GRPOConfig

    @classmethod
    def get_default_config(cls) -> GRPOConfig:
        return GRPOConfig()

    def setup(self, config: Any) -> None:
        super().setup(config)
        self.question_ids: list[str] = self._foreach_runner(lambda runner: runner.question_ids())[0]
        if self.config.question_ids is not None:
            unknown = sorted(set(self.config.question_ids) - set(self.question_ids))
            if unknown:
                raise ValueError(f"question_ids not in the env's dataset: {unknown[:5]} ({len(unknown)} in all)")
            self.question_ids = list(self.config.question_ids)
        if self.config.prompts_per_batch > len(self.question_ids):
            raise ValueError(f"prompts_per_batch={self.config.prompts_per_batch} but the dataset has only "
                             f"{len(self.question_ids)} questions; lower prompts_per_batch")
        self.pad_token_id = self._pad_token_id()
        if self.env_runner_group.num_remote_workers() > 0:  # setup only pushed weights to a local runner
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)

    def training_step(self) -> None:
        config, spec = self.config, get_algorithm(self.config.algorithm)
        started = time.perf_counter()
        samples = self._sample_groups()
        sample_s = time.perf_counter() - started
        trajectories = [t for sample in samples for t in sample["trajectories"]]
        rewards = torch.tensor([t.reward for t in trajectories])  # [N]
        group_ids = torch.tensor([t.group_id for t in trajectories])  # [N]
        advantages = compute_advantages(spec.advantage, rewards, group_ids)  # [N]
        sampled = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: int(sampled) + len(trajectories)}  # drives lr schedules

        started = time.perf_counter()
        minibatches = self._minibatches(group_ids, advantages)
        for rows in minibatches:
            batch = collate([trajectories[i] for i in rows], advantages[rows], self.pad_token_id)
            shards = learner_shards(batch, spec.aggregation, config.num_learners)
            if self.learner_group.is_remote:
                results = self.learner_group.update(batches=shards, num_epochs=config.num_epochs, timesteps=timesteps)
            else:
                results = self.learner_group.update(batch=shards[0], num_epochs=config.num_epochs, timesteps=timesteps)
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
        learner_s = time.perf_counter() - started

        started = time.perf_counter()
        if minibatches:
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
        sync_s = time.perf_counter() - started
        self._log(trajectories, samples, advantages, kept=sum(len(rows) for rows in minibatches),
                  updated=bool(minibatches), sample_s=sample_s, learner_s=learner_s, sync_s=sync_s)

    def _minibatches(self, group_ids: torch.Tensor, advantages: torch.Tensor) -> list[list[int]]:
        """Row indices of each optimizer step: whole groups dealt round-robin (the groups' order is already
        random), less the zero-advantage rows when ``drop_zero_advantage``; empty minibatches are skipped."""
        group_of = group_ids.tolist()
        groups = list(dict.fromkeys(group_of))
        keep = (advantages.abs() > 1e-8).tolist() if self.config.drop_zero_advantage else [True] * len(group_of)
        minibatches = []
        for j in range(self.config.num_minibatches):
            chosen = set(groups[j :: self.config.num_minibatches])
            rows = [i for i, g in enumerate(group_of) if g in chosen and keep[i]]
            if rows:
                minibatches.append(rows)
        return minibatches

    def _sample_groups(self) -> list[dict[str, Any]]:
        config = self.config
        rng = np.random.default_rng([config.seed or 0, self.iteration])
        questions = rng.choice(len(self.question_ids), size=config.prompts_per_batch, replace=False)
        runners = max(1, self.env_runner_group.num_remote_workers())
        plans: list[list[tuple[int, str]]] = [[] for _ in range(runners)]
        for group_id, index in enumerate(questions.tolist()):
            plans[group_id % runners] += [(group_id, self.question_ids[index])] * config.group_size
        iteration = self.iteration
        return self._foreach_runner(lambda runner: runner.sample(plans[max(runner.worker_index - 1, 0)],
                                                                 seed=iteration))

    def _foreach_runner(self, fn: Any) -> list[Any]:
        local = self.env_runner_group.num_remote_workers() <= 0
        return self.env_runner_group.foreach_env_runner(fn, local_env_runner=local)

    def _pad_token_id(self) -> int:
        return self._foreach_runner(lambda runner: runner.backend.pad_token_id)[0]

    def _log(self, trajectories: list[Trajectory], samples: list[dict[str, Any]], advantages: torch.Tensor, *,
             kept: int, updated: bool, sample_s: float, learner_s: float, sync_s: float) -> None:
        stats = {key: float(np.mean([t.stats[key] for t in trajectories])) for key in trajectories[0].stats}
        tokens = sum(s["generated_tokens"] for s in samples)
        values = {
            "charts/episodic_return": stats["reward"],
            "charts/f1": stats["f1"],
            "charts/format_ok_rate": stats["format_ok"],
            "charts/searches_per_episode": stats["searches"],
            "charts/response_length": stats["response_tokens"],
            "charts/truncated_rate": stats["truncated"],
            "charts/advantage_abs_mean": float(advantages.abs().mean()),
            "charts/trained_trajectories": float(kept),
            "charts/tokens_per_s": tokens / max(sample_s, 1e-9),
            "timers/generate_s": max(s["generate_s"] for s in samples),
            "timers/env_s": max(s["env_s"] for s in samples),
            "timers/sample_s": sample_s,
            "timers/learner_s": learner_s,
            "timers/sync_weights_s": sync_s,
        }
        # The rate the learner set for its next update (RLlib schedules it after each update).
        values["charts/learning_rate"] = float(self.metrics.peek(
            (LEARNER_RESULTS, DEFAULT_MODULE_ID, f"{DEFAULT_OPTIMIZER}_{LR_KEY}"), default=float("nan")))
        for name in LOSSES:  # NaN when no trajectory had a non-zero advantage, so no update was made
            values[f"losses/{name}"] = float("nan") if not updated else float(self.metrics.peek(
                (LEARNER_RESULTS, DEFAULT_MODULE_ID, f"losses/{name}"), default=float("nan")))
        self.metrics.log_dict(values, reduce="mean", window=1)
        self.metrics.log_value((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), len(trajectories),
                               reduce="lifetime_sum")


def learner_shards(batch: dict[str, torch.Tensor], aggregation: str, num_learners: int) -> list[MultiAgentBatch]:
    """One optimizer step's batch as ``max(1, num_learners)`` equal shards (uneven DDP shards hang).

    Rows are padded to a multiple of the learner count with copies of the first row that carry no loss.
    Each row gets a ``loss_weight`` such that the weighted micro-batch losses, summed over micro-batches and
    averaged over learners by DDP, are the loss of the whole batch on one learner: exact for ``token_mean``
    (each row's share of the policy tokens) and ``constant_norm`` (each row's share of the trajectories).
    """
    learners = max(1, num_learners)
    real_rows = batch["advantages"].shape[0]
    padding = -real_rows % learners
    if padding:
        batch = {k: torch.cat([v, v[:1].expand(padding, *v.shape[1:])]) for k, v in batch.items()}
        batch["loss_mask"][real_rows:] = 0
    loss_mask = batch["loss_mask"]
    if aggregation == "constant_norm":
        share = torch.zeros(loss_mask.shape[0])
        share[:real_rows] = 1.0 / real_rows
    else:
        share = loss_mask.sum(dim=1) / loss_mask.sum().clamp(min=1)
    batch["loss_weight"] = learners * share
    size = loss_mask.shape[0] // learners
    return [MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch({k: v[i * size:(i + 1) * size].numpy()
                                                             for k, v in batch.items()})}, env_steps=size)
            for i in range(learners)]
