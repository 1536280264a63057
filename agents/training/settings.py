"""The settings of GRPO and its registered relatives, shared by both trainers: one name, one default (the
paper's, SPEC §6) and one help text per setting. The RLlib ``GRPOConfig`` and the plain-PyTorch loop read
these fields, and both CLIs are derived from them (``agents.training.cli``).

Light on purpose: no torch or Ray import, so ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.generation.rollout import RolloutConfig
    from agents.training.algorithms import LossConfig

#: The environment trained on unless a config or ``--env`` names another registered id.
DEFAULT_ENV_ID = "ReSearch-MuSiQue-v0"


def _setting(default: Any, help: str) -> Any:  # noqa: A002  (argparse's word)
    return field(default=default, metadata={"help": help})


@dataclass
class GRPOSettings:
    """The algorithm's settings (paper defaults). ``lr``, ``grad_clip``, ``num_epochs`` and ``seed`` keep the
    names RLlib's ``AlgorithmConfig`` gives them, so the RLlib config holds them without translation."""

    algorithm: str = _setting("grpo", "advantage estimator + loss aggregation, a key of agents.training.algorithms")
    group_size: int = _setting(5, "rollouts per question (the group of the group baseline)")
    prompts_per_batch: int = _setting(256, "questions per train batch")
    lr: float = _setting(1e-6, "learning rate (AdamW, no weight decay)")
    warmup_iterations: int = _setting(0, "iterations of linear learning-rate warmup, then constant")
    clip_ratio: float = _setting(0.2, "PPO clip range of the probability ratio")
    kl_coef: float = _setting(0.001, "coefficient of the k3 KL to the frozen reference (0: no reference)")
    entropy_coef: float = _setting(0.001, "coefficient of the entropy bonus")
    grad_clip: float = _setting(1.0, "clip gradients to this global norm")
    num_epochs: int = _setting(1, "passes over each train batch")
    num_minibatches: int = _setting(1, "optimizer steps per pass, each on whole groups")
    drop_zero_advantage: bool = _setting(
        False, "leave out of the update the groups whose rewards are all equal (zero advantage)"
    )
    micro_batch_size: int = _setting(2, "trajectories per forward/backward (memory only: the gradient is the same)")
    temperature: float = _setting(1.0, "sampling temperature of the rollouts")
    max_new_tokens: int = _setting(512, "tokens per generation call (one chunk of a response)")
    max_tokens: int = _setting(8192 + 512, "context budget of an episode: prompt + response + results, in tokens")
    max_turns: int | None = _setting(None, "generation calls per episode (None: unlimited)")
    max_batch_tokens: int | None = _setting(
        None,
        "HF rollouts: padded tokens (rows x (longest context + chunk cap)) per generation batch, which bounds its KV "
        "cache (None: every rollout of the batch at once); vLLM schedules its own batches",
    )
    max_response_tokens: int = _setting(8192, "Dr. GRPO's constant normaliser of the loss")
    seed: int = _setting(0, "seed of question draws, sampling and initialisation")

    def rollout_config(self) -> RolloutConfig:
        """The token budgets of an episode, as the rollout loop takes them."""
        from agents.generation.rollout import RolloutConfig

        return RolloutConfig(max_new_tokens=self.max_new_tokens, max_tokens=self.max_tokens, max_turns=self.max_turns)

    def loss_config(self) -> LossConfig:
        """The loss's coefficients and the algorithm's aggregation, as ``policy_loss`` takes them."""
        from agents.training.algorithms import LossConfig, get_algorithm

        return LossConfig(
            clip_ratio=self.clip_ratio,
            kl_coef=self.kl_coef,
            entropy_coef=self.entropy_coef,
            aggregation=get_algorithm(self.algorithm).aggregation,
            max_response_tokens=self.max_response_tokens,
        )

    def validate(self) -> None:
        """Errors a run would otherwise hit only after its start-up (Ray, the model, the index)."""
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 for a group baseline, got {self.group_size}")
        if self.micro_batch_size < 1 or self.prompts_per_batch < 1:
            raise ValueError("micro_batch_size and prompts_per_batch must be >= 1")
        if not 1 <= self.num_minibatches <= self.prompts_per_batch:
            raise ValueError(
                f"num_minibatches must be in [1, prompts_per_batch={self.prompts_per_batch}] (a "
                f"minibatch holds whole groups), got {self.num_minibatches}"
            )
        if self.num_epochs < 1 or self.warmup_iterations < 0:
            raise ValueError("num_epochs must be >= 1 and warmup_iterations >= 0")
        if self.max_new_tokens < 1 or self.max_tokens < self.max_new_tokens:
            raise ValueError(f"need 1 <= max_new_tokens <= max_tokens, got {self.max_new_tokens}, {self.max_tokens}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1 or None (no budget), got {self.max_batch_tokens}")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1 or None (unlimited), got {self.max_turns}")


SETTING_NAMES = tuple(f.name for f in fields(GRPOSettings))


def warmup_factor(iteration: int, warmup_iterations: int) -> float:
    """The learning-rate multiplier of 0-based ``iteration``: linear from 1/(w+1) to 1 over ``w`` iterations.
    :func:`warmup_lr` is the same schedule in RLlib's form."""
    if warmup_iterations <= 0:
        return 1.0
    return (1 + min(iteration, warmup_iterations)) / (warmup_iterations + 1)


def warmup_lr(lr: float, warmup_iterations: int, trajectories_per_iteration: int) -> float | list[list[float]]:
    """``lr``, or RLlib's piecewise schedule for the warmup of :func:`warmup_factor` (RLlib schedules by
    sampled trajectories, which ``GRPO.training_step`` passes to the learners)."""
    if warmup_iterations <= 0:
        return lr
    return [[0, lr / (warmup_iterations + 1)], [warmup_iterations * trajectories_per_iteration, lr]]
