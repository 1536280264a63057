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
    3. The padded batch is split into ``num_learners`` equal shards and passed pre-sharded to
       ``learner_group.update``: RLlib's own episode sharding could split groups and make uneven shards,
       and uneven shards make DDP hang.
    4. The learners' weights (CPU tensors) go to the env runners.
    """

    config: GRPOConfig

    @classmethod
    def get_default_config(cls) -> GRPOConfig:
        return GRPOConfig()

    def setup(self, config: Any) -> None:
        super().setup(config)
        self.question_ids: list[str] = self._foreach_runner(lambda runner: runner.question_ids())[0]
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
        batch = collate(trajectories, advantages, self.pad_token_id)
        batch["loss_weight"] = self._loss_weights(batch["loss_mask"], spec.aggregation)

        started = time.perf_counter()
        shards = self._shards(batch)
        if self.learner_group.is_remote:
            learner_results = self.learner_group.update(batches=shards, num_epochs=config.num_epochs)
        else:
            learner_results = self.learner_group.update(batch=shards[0], num_epochs=config.num_epochs)
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        learner_s = time.perf_counter() - started

        started = time.perf_counter()
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
        sync_s = time.perf_counter() - started
        self._log(trajectories, samples, advantages, sample_s=sample_s, learner_s=learner_s, sync_s=sync_s)

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

    def _loss_weights(self, loss_mask: torch.Tensor, aggregation: str) -> torch.Tensor:
        """Per-trajectory weights [B] whose sum over a micro-batch scales its loss so that summing over
        micro-batches and averaging over learners (DDP) gives the whole batch's loss. Exact for
        ``token_mean`` (shares of policy tokens) and ``constant_norm`` (shares of trajectories)."""
        learners = max(1, self.config.num_learners)
        if aggregation == "constant_norm":
            share = torch.full((loss_mask.shape[0],), 1.0 / loss_mask.shape[0])
        else:
            share = loss_mask.sum(dim=1) / loss_mask.sum().clamp(min=1)
        return learners * share

    def _shards(self, batch: dict[str, torch.Tensor]) -> list[MultiAgentBatch]:
        rows = batch["advantages"].shape[0]
        learners = max(1, self.config.num_learners)
        size = rows // learners  # validate() made rows divisible by learners
        return [MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch({k: v[i * size:(i + 1) * size].numpy()
                                                                 for k, v in batch.items()})}, env_steps=size)
                for i in range(learners)]

    def _foreach_runner(self, fn: Any) -> list[Any]:
        local = self.env_runner_group.num_remote_workers() <= 0
        return self.env_runner_group.foreach_env_runner(fn, local_env_runner=local)

    def _pad_token_id(self) -> int:
        return self._foreach_runner(lambda runner: runner.backend.pad_token_id)[0]

    def _log(self, trajectories: list[Trajectory], samples: list[dict[str, Any]], advantages: torch.Tensor, *,
             sample_s: float, learner_s: float, sync_s: float) -> None:
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
            "charts/tokens_per_s": tokens / max(sample_s, 1e-9),
            "timers/generate_s": max(s["generate_s"] for s in samples),
            "timers/env_s": max(s["env_s"] for s in samples),
            "timers/sample_s": sample_s,
            "timers/learner_s": learner_s,
            "timers/sync_weights_s": sync_s,
        }
        for name in LOSSES:
            values[f"losses/{name}"] = float(self.metrics.peek((LEARNER_RESULTS, DEFAULT_MODULE_ID, f"losses/{name}"),
                                                               default=float("nan")))
        self.metrics.log_dict(values, reduce="mean", window=1)
        self.metrics.log_value((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), len(trajectories),
                               reduce="lifetime_sum")
