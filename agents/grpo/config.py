"""GRPO's configuration on RLlib's AlgorithmConfig, with ReSearch's hyperparameters (SPEC §6) as defaults;
``algorithm`` picks the advantage estimator and loss aggregation from ``agents.algorithms.ALGORITHMS``."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from agents.algorithms import get_algorithm
from agents.rollout import RolloutConfig

#: The environment trained on unless ``config.environment(env=...)`` names another registered id.
DEFAULT_ENV_ID = "ReSearch-MuSiQue-v0"


def warmup_lr(lr: float, warmup_iterations: int, trajectories_per_iteration: int) -> float | list[list[float]]:
    """``lr``, or RLlib's piecewise schedule for a linear warmup over ``warmup_iterations`` (RLlib schedules
    by sampled trajectories, which ``GRPO.training_step`` passes to the learners)."""
    if warmup_iterations <= 0:
        return lr
    return [[0, lr / (warmup_iterations + 1)], [warmup_iterations * trajectories_per_iteration, lr]]


class GRPOConfig(AlgorithmConfig):
    """Defaults are the paper's (SPEC §6): group size 5, temperature 1.0, lr 1e-6, clip 0.2, k3 KL to a
    frozen reference with coefficient 0.001, entropy coefficient 0.001, gradient clipping at global norm
    1.0, one optimisation epoch (a single optimizer step) per train batch of 256 prompts.

    Example:
        >>> config = (GRPOConfig().training(algorithm="rloo", prompts_per_batch=4, group_size=4)
        ...           .rollouts(max_new_tokens=32, max_tokens=1024).policy(model=None))
        >>> algo = config.build_algo()  # doctest: +SKIP
        >>> algo.train()["charts/episodic_return"]  # doctest: +SKIP
    """

    def __init__(self, algo_class: type | None = None) -> None:
        from agents.grpo.algorithm import GRPO

        super().__init__(algo_class=algo_class or GRPO)
        from agents.grpo.env_runner import ReSearchEnvRunner

        # What RLlib owns: learners, optimizer, gradient clipping, checkpoints.
        self.lr = 1e-6
        self.grad_clip = 1.0
        self.grad_clip_by = "global_norm"
        self.num_epochs = 1
        self.env = DEFAULT_ENV_ID
        self.env_runner_cls = ReSearchEnvRunner
        self.num_env_runners = 0
        # Our runners have no connector state; weights are synced explicitly after each update.
        self.merge_env_runner_states = False
        self.broadcast_env_runner_states = False
        # What RLlib has no notion of: prompts, groups, token budgets, the LM.
        self.algorithm = "grpo"
        self.group_size = 5
        self.prompts_per_batch = 256
        self.temperature = 1.0
        self.clip_ratio = 0.2
        self.kl_coef = 0.001
        self.entropy_coef = 0.001
        self.micro_batch_size = 2
        self.num_minibatches = 1
        self.drop_zero_advantage = False
        self.question_ids: list[str] | None = None
        self.max_response_tokens = 8192
        self.max_new_tokens = 512
        self.max_tokens = 8192 + 512
        self.max_turns: int | None = None
        self.model_path: str | None = None
        self.model_dtype = "float32"
        self.lora: dict[str, Any] | None = None

    def training(self, *, algorithm: str = NotProvided, group_size: int = NotProvided,
                 prompts_per_batch: int = NotProvided, temperature: float = NotProvided,
                 clip_ratio: float = NotProvided, kl_coef: float = NotProvided, entropy_coef: float = NotProvided,
                 micro_batch_size: int = NotProvided, max_response_tokens: int = NotProvided,
                 num_minibatches: int = NotProvided, drop_zero_advantage: bool = NotProvided,
                 question_ids: list[str] | None = NotProvided, **kwargs: Any) -> GRPOConfig:
        """GRPO's own knobs on top of AlgorithmConfig's (``lr``, ``grad_clip``, ``num_epochs``, ...).

        ``micro_batch_size`` trajectories are forwarded at once on a learner; it trades memory for
        speed and does not change the gradient. ``num_minibatches`` optimizer steps are taken per train
        batch (per epoch), each on whole groups (the paper: 1). ``drop_zero_advantage`` leaves out of the
        update the trajectories whose advantage is 0 (a group with equal rewards): they add only KL and
        entropy terms and dilute the token mean. ``question_ids`` restricts training to those questions of
        the env's dataset (None: all of them). ``lr`` may be RLlib's schedule ``[[0, lr0], [t, lr1], ...]``
        over sampled trajectories, e.g. a warmup.
        """
        super().training(**kwargs)
        for name, value in dict(algorithm=algorithm, group_size=group_size, prompts_per_batch=prompts_per_batch,
                                temperature=temperature, clip_ratio=clip_ratio, kl_coef=kl_coef,
                                entropy_coef=entropy_coef, micro_batch_size=micro_batch_size,
                                max_response_tokens=max_response_tokens, num_minibatches=num_minibatches,
                                drop_zero_advantage=drop_zero_advantage, question_ids=question_ids).items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def rollouts(self, *, max_new_tokens: int = NotProvided, max_tokens: int = NotProvided,
                 max_turns: int | None = NotProvided) -> GRPOConfig:
        """Token budgets of an episode (see :class:`agents.rollout.RolloutConfig`)."""
        for name, value in dict(max_new_tokens=max_new_tokens, max_tokens=max_tokens, max_turns=max_turns).items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def policy(self, *, model: str | None = NotProvided, dtype: str = NotProvided,
               lora: dict[str, Any] | None = NotProvided) -> GRPOConfig:
        """The LM: a local checkpoint directory (None: the tiny default), its dtype, LoRA arguments."""
        if model is not NotProvided:
            self.model_path = model
        if dtype is not NotProvided:
            self.model_dtype = dtype
        if lora is not NotProvided:
            self.lora = lora
        return self

    @property
    def rollout_config(self) -> RolloutConfig:
        return RolloutConfig(max_new_tokens=self.max_new_tokens, max_tokens=self.max_tokens, max_turns=self.max_turns)

    @property
    def trajectories_per_batch(self) -> int:
        return self.prompts_per_batch * self.group_size

    def validate(self) -> None:
        super().validate()
        get_algorithm(self.algorithm)
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 for a group baseline, got {self.group_size}")
        if self.micro_batch_size < 1 or self.prompts_per_batch < 1:
            raise ValueError("micro_batch_size and prompts_per_batch must be >= 1")
        if not 1 <= self.num_minibatches <= self.prompts_per_batch:
            raise ValueError(f"num_minibatches must be in [1, prompts_per_batch={self.prompts_per_batch}] (a "
                             f"minibatch holds whole groups), got {self.num_minibatches}")
        if self.question_ids is not None and len(set(self.question_ids)) != len(self.question_ids):
            raise ValueError("question_ids has duplicates: each question is one group per batch")

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from agents.grpo.module import CausalLMModule

        return RLModuleSpec(module_class=CausalLMModule, model_config={
            "model": self.model_path, "dtype": self.model_dtype, "kl_coef": self.kl_coef, "lora": self.lora})

    def get_default_learner_class(self) -> type:
        from agents.grpo.learner import GRPOTorchLearner

        return GRPOTorchLearner
