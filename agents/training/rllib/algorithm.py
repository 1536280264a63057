"""GRPO (and the algorithms registered beside it) on Ray RLlib: its config, with ReSearch's hyperparameters
(SPEC §6) as defaults, and the Algorithm. Sample whole groups on the env runners, compute group advantages on
the driver, where every group is complete, update the learners on even shards, sync the weights back.

Config and algorithm share this module, as in RLlib's own algorithms; the learner, module and env runner are
imported lazily, so importing the config does not import torch models.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import DEFAULT_OPTIMIZER, LR_KEY
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)

from agents.generation.engines import ROLLOUT_BACKENDS
from agents.generation.rollout import RolloutConfig
from agents.training.algorithms import (
    Trajectory,
    collate,
    compute_advantages,
    get_aggregation,
    get_algorithm,
    minibatch_rows,
)
from agents.training.reporting import LOGPROB_DIFF, rollout_charts
from agents.training.settings import DEFAULT_ENV_ID, SETTING_NAMES, GRPOSettings, warmup_lr


class GRPOConfig(AlgorithmConfig):
    """Defaults are the paper's (SPEC §6), from :class:`agents.training.settings.GRPOSettings`: group size 5,
    temperature 1.0, lr 1e-6, clip 0.2, k3 KL to a frozen reference with coefficient 0.001, entropy coefficient
    0.001, gradient clipping at global norm 1.0, one optimisation epoch (a single optimizer step) per train
    batch of 256 prompts. Every setting is an attribute of the same name.

    Example:
        >>> config = (GRPOConfig().training(algorithm="rloo", prompts_per_batch=4, group_size=4)
        ...           .rollouts(max_new_tokens=32, max_tokens=1024).policy(model=None))
        >>> algo = config.build_algo()  # doctest: +SKIP
        >>> algo.train()["charts/episodic_return"]  # doctest: +SKIP
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or GRPO)
        from agents.training.rllib.env_runner import ReSearchEnvRunner

        # The algorithm's settings; lr, grad_clip, num_epochs and seed are also what RLlib reads.
        for setting in fields(GRPOSettings):
            setattr(self, setting.name, setting.default)
        self.grad_clip_by = "global_norm"
        self.env = DEFAULT_ENV_ID
        self.env_runner_cls = ReSearchEnvRunner
        self.num_env_runners = 0
        # With remote runners the driver samples nothing, so it builds no local runner (RLlib makes one anyway
        # when there are no remote runners).
        self.create_local_env_runner = False
        # The rollout engine of the runners (see ``rollouts``).
        self.rollout_backend = "auto"
        self.vllm_tensor_parallel_size = 1
        self.engine_kwargs: dict[str, Any] = {}
        # Our runners have no connector state; weights are synced explicitly after each update.
        self.merge_env_runner_states = False
        self.broadcast_env_runner_states = False
        # What RLlib has no notion of: the questions and the LM.
        self.question_ids: list[str] | None = None
        self.model_path: str | None = None
        self.model_dtype: str | None = None  # bfloat16 on a GPU, float32 on CPU
        self.lora: dict[str, Any] | None = None
        self.gradient_checkpointing = False
        self.learner_strategy = "ddp"

    def training(self, *, question_ids: list[str] | None = NotProvided, **kwargs: Any) -> GRPOConfig:
        """Any field of :class:`GRPOSettings` by name, plus AlgorithmConfig's own training arguments.

        ``question_ids`` restricts training to those questions of the env's dataset (None: all of them).
        ``lr`` may also be RLlib's schedule ``[[0, lr0], [t, lr1], ...]`` over sampled trajectories; a float
        ``lr`` with ``warmup_iterations`` becomes :func:`warmup_lr`'s schedule.
        """
        ours = {name: kwargs.pop(name) for name in list(kwargs) if name in SETTING_NAMES}
        super().training(**{k: v for k, v in ours.items() if k in ("lr", "grad_clip", "num_epochs")}, **kwargs)
        for name, value in ours.items():
            setattr(self, name, value)
        if question_ids is not NotProvided:
            self.question_ids = question_ids
        return self

    def rollouts(
        self,
        *,
        backend: str = NotProvided,
        max_new_tokens: int = NotProvided,
        max_tokens: int = NotProvided,
        max_turns: int | None = NotProvided,
        tensor_parallel_size: int = NotProvided,
        engine_kwargs: dict[str, Any] = NotProvided,
    ) -> GRPOConfig:
        """The rollout engine, and the token budgets of an episode (:class:`agents.generation.rollout.RolloutConfig`).

        ``backend``: ``"vllm"`` (one engine per env runner, built from the policy checkpoint with prefix caching, its
        weights replaced in place after every update; give each runner a GPU with
        ``env_runners(num_gpus_per_env_runner=...)``), ``"hf"`` (the exact reference, on CPU or the runner's GPU)
        or ``"auto"`` (vLLM where it is installed and a GPU is present). ``tensor_parallel_size`` and
        ``engine_kwargs`` (e.g. ``gpu_memory_utilization``) go to ``vllm.LLM``.
        """
        if backend is not NotProvided:
            self.rollout_backend = backend
        if tensor_parallel_size is not NotProvided:
            self.vllm_tensor_parallel_size = tensor_parallel_size
        if engine_kwargs is not NotProvided:
            self.engine_kwargs = dict(engine_kwargs)
        budgets = dict(max_new_tokens=max_new_tokens, max_tokens=max_tokens, max_turns=max_turns)
        return self.training(**{name: value for name, value in budgets.items() if value is not NotProvided})

    def policy(
        self,
        *,
        model: str | None = NotProvided,
        dtype: str | None = NotProvided,
        lora: dict[str, Any] | None = NotProvided,
        gradient_checkpointing: bool = NotProvided,
        strategy: str = NotProvided,
    ) -> GRPOConfig:
        """The LM and how the learners hold it: a local checkpoint directory (None: the tiny default), its compute
        dtype (``"float32"``/``"bfloat16"``; None: bfloat16 on a GPU, float32 on CPU; log-probs and the loss are
        float32 either way), LoRA arguments, gradient checkpointing, and ``strategy``: ``"ddp"`` replicates the
        model on every learner, ``"fsdp"`` shards weights, gradients and AdamW's moments over the learners
        (FSDP2, float32 master weights; needs ``num_learners >= 1``). See ``agents.training.memory``."""
        if model is not NotProvided:
            self.model_path = model
        if dtype is not NotProvided:
            self.model_dtype = dtype
        if lora is not NotProvided:
            self.lora = lora
        if gradient_checkpointing is not NotProvided:
            self.gradient_checkpointing = gradient_checkpointing
        if strategy is not NotProvided:
            self.learner_strategy = strategy
        return self

    @property
    def settings(self) -> GRPOSettings:
        return GRPOSettings(**{name: getattr(self, name) for name in SETTING_NAMES})

    @property
    def rollout_config(self) -> RolloutConfig:
        return self.settings.rollout_config()

    @property
    def trajectories_per_batch(self) -> int:
        return self.prompts_per_batch * self.group_size

    @property
    def lr_schedule(self) -> float | list[list[float]]:
        """What the learners' optimizer gets: ``lr``, or the warmup schedule when ``lr`` is a float."""
        if isinstance(self.lr, (int, float)):
            return warmup_lr(float(self.lr), self.warmup_iterations, self.trajectories_per_batch)
        return self.lr

    def validate(self) -> None:
        super().validate()
        get_algorithm(self.algorithm)
        self.settings.validate()
        if self.question_ids is not None and len(set(self.question_ids)) != len(self.question_ids):
            raise ValueError("question_ids has duplicates: each question is one group per batch")
        if self.model_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(
                f"policy(dtype=...) must be 'float32', 'bfloat16' or None (bfloat16 on a GPU), got {self.model_dtype!r}"
            )
        if self.rollout_backend not in ROLLOUT_BACKENDS:
            raise ValueError(f"rollouts(backend=...) must be one of {ROLLOUT_BACKENDS}, got {self.rollout_backend!r}")
        if self.vllm_tensor_parallel_size < 1:
            raise ValueError(f"rollouts(tensor_parallel_size=...) must be >= 1, got {self.vllm_tensor_parallel_size}")
        if self.rollout_backend == "vllm" and self.lora:
            raise ValueError(
                "rollouts(backend='vllm') reloads every weight of the engine after each update, and LoRA runs send "
                "only their adapters: use backend='hf' with LoRA, or train all weights"
            )
        if self.learner_strategy not in ("ddp", "fsdp"):
            raise ValueError(f"policy(strategy=...) must be 'ddp' or 'fsdp', got {self.learner_strategy!r}")
        if self.learner_strategy == "fsdp" and (self.num_learners < 1 or self.lora):
            raise ValueError(
                "policy(strategy='fsdp') shards over the learner actors' process group and trains all "
                "weights: set learners(num_learners=N) with N >= 1 and leave lora unset (LoRA's "
                "adapters are small enough to replicate: use strategy='ddp')"
            )

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from agents.training.rllib.module import CausalLMModule

        return RLModuleSpec(
            module_class=CausalLMModule,
            model_config={
                "model": self.model_path,
                "temperature": self.temperature,
                "dtype": self.model_dtype,
                "kl_coef": self.kl_coef,
                "lora": self.lora,
                "gradient_checkpointing": self.gradient_checkpointing,
                "strategy": self.learner_strategy,
            },
        )

    def get_default_learner_class(self) -> type:
        from agents.training.rllib.learner import GRPOTorchLearner

        return GRPOTorchLearner


LOSSES = ("policy_loss", "approx_kl", "clipfrac", "kl", "entropy")


def _put_policy_state(learner: Any) -> ray.ObjectRef | None:
    """On learner 0 (rank 0 of the process group), put the policy's inference state into the object store."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    return ray.put(learner.module[DEFAULT_MODULE_ID].unwrapped().get_state(inference_only=True))


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
            raise ValueError(
                f"prompts_per_batch={self.config.prompts_per_batch} but the dataset has only "
                f"{len(self.question_ids)} questions; lower prompts_per_batch"
            )
        self.pad_token_id = self._pad_token_id()
        if self.env_runner_group.num_remote_workers() > 0:  # setup only pushed weights to a local runner
            self.sync_rollout_weights()

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
        minibatches = minibatch_rows(group_ids.tolist(), advantages, config.num_minibatches, config.drop_zero_advantage)
        logprob_diff = float("nan")
        for step, rows in enumerate(minibatches):
            batch = collate([trajectories[i] for i in rows], advantages[rows], self.pad_token_id)
            shards = learner_shards(batch, spec.aggregation, config.num_learners)
            if self.learner_group.is_remote:
                results = self.learner_group.update(batches=shards, num_epochs=config.num_epochs, timesteps=timesteps)
            else:
                results = self.learner_group.update(batch=shards[0], num_epochs=config.num_epochs, timesteps=timesteps)
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
            if step == 0:  # before this iteration's first optimizer step: the weights the rollouts sampled from
                logprob_diff = float(
                    self.metrics.peek((LEARNER_RESULTS, DEFAULT_MODULE_ID, LOGPROB_DIFF), default=float("nan"))
                )
        learner_s = time.perf_counter() - started

        started = time.perf_counter()
        if minibatches:
            self.sync_rollout_weights()
        sync_s = time.perf_counter() - started
        self._log(
            trajectories,
            samples,
            advantages,
            kept=sum(len(rows) for rows in minibatches),
            updated=bool(minibatches),
            logprob_diff=logprob_diff,
            sample_s=sample_s,
            learner_s=learner_s,
            sync_s=sync_s,
        )

    def _sample_groups(self) -> list[dict[str, Any]]:
        config = self.config
        rng = np.random.default_rng([config.seed or 0, self.iteration])
        questions = rng.choice(len(self.question_ids), size=config.prompts_per_batch, replace=False)
        runners = max(1, self.env_runner_group.num_remote_workers())
        plans: list[list[tuple[int, str]]] = [[] for _ in range(runners)]
        for group_id, index in enumerate(questions.tolist()):
            plans[group_id % runners] += [(group_id, self.question_ids[index])] * config.group_size
        iteration = self.iteration
        return self._foreach_runner(
            lambda runner: runner.sample(plans[max(runner.worker_index - 1, 0)], seed=iteration)
        )

    def sync_rollout_weights(self) -> None:
        """Give every env runner's engine the learners' weights, in place.

        With remote learners, learner 0 puts its state into the object store and each runner fetches it from there,
        so the weights never pass through the driver (RLlib's ``sync_weights`` gathers them in the driver and puts
        them again); a local learner's state is in the driver already. The runners' vLLM engines reload in place.
        """
        runners = self.env_runner_group
        if runners.num_remote_workers() == 0:
            runners.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
            return
        if self.learner_group.is_remote:
            results = list(self.learner_group.foreach_learner(_put_policy_state))
            for result in results:
                if not result.ok:
                    raise result.get()
            state_ref = next(ref for result in results if (ref := result.get()) is not None)
        else:
            state_ref = ray.put(self.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID])
        runners.foreach_env_runner(lambda runner: runner.load_policy_state(state_ref), local_env_runner=False)

    def _foreach_runner(self, fn: Any) -> list[Any]:
        local = self.env_runner_group.num_remote_workers() <= 0
        return self.env_runner_group.foreach_env_runner(fn, local_env_runner=local)

    def _pad_token_id(self) -> int:
        return self._foreach_runner(lambda runner: runner.backend.pad_token_id)[0]

    def _log(
        self,
        trajectories: list[Trajectory],
        samples: list[dict[str, Any]],
        advantages: torch.Tensor,
        *,
        kept: int,
        updated: bool,
        logprob_diff: float,
        sample_s: float,
        learner_s: float,
        sync_s: float,
    ) -> None:
        tokens = sum(s["generated_tokens"] for s in samples)
        values = {
            **rollout_charts(trajectories, advantages, trained=kept, generated_tokens=tokens, sample_s=sample_s),
            "timers/generate_s": max(s["generate_s"] for s in samples),
            "timers/env_s": max(s["env_s"] for s in samples),
            "timers/sample_s": sample_s,
            "timers/learner_s": learner_s,
            "timers/sync_weights_s": sync_s,
            LOGPROB_DIFF: logprob_diff,
        }
        # The rate the learner set for its next update (RLlib schedules it after each update).
        values["charts/learning_rate"] = float(
            self.metrics.peek(
                (LEARNER_RESULTS, DEFAULT_MODULE_ID, f"{DEFAULT_OPTIMIZER}_{LR_KEY}"), default=float("nan")
            )
        )
        for name in LOSSES:  # NaN when no trajectory had a non-zero advantage, so no update was made
            values[f"losses/{name}"] = (
                float("nan")
                if not updated
                else float(
                    self.metrics.peek((LEARNER_RESULTS, DEFAULT_MODULE_ID, f"losses/{name}"), default=float("nan"))
                )
            )
        self.metrics.log_dict(values, reduce="mean", window=1)
        self.metrics.log_value(
            (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), len(trajectories), reduce="lifetime_sum"
        )


def learner_shards(batch: dict[str, torch.Tensor], aggregation: str, num_learners: int) -> list[MultiAgentBatch]:
    """One optimizer step's batch as ``max(1, num_learners)`` equal shards (uneven DDP shards hang).

    Rows are padded to a multiple of the learner count with copies of the first row that carry no loss.
    Each row gets a ``loss_weight`` such that the weighted micro-batch losses, summed over micro-batches and
    averaged over learners by DDP, are the loss of the whole batch on one learner: its share of the batch
    loss, as the registered aggregation defines it (``LossAggregation.row_share``).
    """
    learners = max(1, num_learners)
    real_rows = batch["advantages"].shape[0]
    padding = -real_rows % learners
    if padding:
        batch = {k: torch.cat([v, v[:1].expand(padding, *v.shape[1:])]) for k, v in batch.items()}
        batch["loss_mask"][real_rows:] = 0
    loss_mask = batch["loss_mask"]
    share = torch.zeros(loss_mask.shape[0])
    share[:real_rows] = get_aggregation(aggregation).row_share(loss_mask[:real_rows])
    batch["loss_weight"] = learners * share
    size = loss_mask.shape[0] // learners
    return [
        MultiAgentBatch(
            {DEFAULT_MODULE_ID: SampleBatch({k: v[i * size : (i + 1) * size].numpy() for k, v in batch.items()})},
            env_steps=size,
        )
        for i in range(learners)
    ]
