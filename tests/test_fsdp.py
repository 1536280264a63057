"""The FSDP2 learners on real Ray with gloo on CPU: two sharded learners take the same step as one unsharded
learner on the whole batch, and their checkpoints resume unsharded learners and back."""

from __future__ import annotations

import pytest
import torch

ray = pytest.importorskip("ray")

from conftest import qwen25_shaped_checkpoint  # noqa: E402
from ray.rllib.core import DEFAULT_MODULE_ID  # noqa: E402
from test_grpo_learners import SPACES, config, synthetic_batch  # noqa: E402

from agents.training.rllib.algorithm import learner_shards  # noqa: E402


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> str:
    """The tiny model's shape over a 5,000-token vocabulary (the synthetic batch's ids). Over Qwen2.5's 151k
    tokens most embedding rows get gradients near AdamW's eps (1e-8), where its first step, lr * g / (|g| + eps),
    turns float32 summation noise into differences of a fraction of lr, and updates cannot be compared."""
    from agents.policies.models import qwen2_config, random_causal_lm

    path = tmp_path_factory.mktemp("small-qwen2")
    config = qwen2_config(
        5000,
        0,
        1,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    )
    random_causal_lm(config, seed=0).save_pretrained(path)
    return str(path)


class Learners:
    """A LearnerGroup, local or remote, with the few calls the test makes."""

    def __init__(self, model: str, num_learners: int, strategy: str) -> None:
        self.cfg = config(num_learners).policy(model=model, strategy=strategy)
        self.group = self.cfg.build_learner_group(rl_module_spec=self.cfg.get_multi_rl_module_spec(spaces=SPACES))

    def update(self, batch: dict[str, torch.Tensor]) -> float:
        """The loss of the whole batch: each learner reports its shard's, weighted so that their mean is it."""
        shards = learner_shards(dict(batch), "token_mean", self.cfg.num_learners)
        remote = self.group.is_remote
        results = self.group.update(batches=shards) if remote else self.group.update(batch=shards[0])
        return sum(float(r[DEFAULT_MODULE_ID]["total_loss"].peek()) for r in results) / len(results)

    def weights_and_gradients(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Unsharded weights and gradients of the policy (of learner 0; FSDP's learners agree by construction)."""

        def full_weights_and_gradients(learner) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
            # A collective under FSDP, so it runs on every learner at once (foreach_learner); nested, so
            # that Ray ships it by value (the tests are not importable on the learners).
            from torch.distributed.tensor import DTensor

            def full(tensor: torch.Tensor) -> torch.Tensor:
                return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()

            model = learner.module[DEFAULT_MODULE_ID].unwrapped().model
            return (
                {name: full(p) for name, p in model.named_parameters()},
                {name: full(p.grad) for name, p in model.named_parameters() if p.grad is not None},
            )

        if self.group.is_remote:
            return [r.get() for r in self.group.foreach_learner(full_weights_and_gradients)][0]
        return full_weights_and_gradients(self.group._learner)

    def get_state(self) -> dict:
        return self.group.get_state()

    def set_state(self, state: dict) -> None:
        self.group.set_state(state)


#: The learning rate of ``config``: AdamW moves each weight by up to this much per step.
LR = 1e-2


def assert_close(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str, atol: float | None = None
) -> None:
    """Gradients: rtol 1e-4, with an absolute tolerance relative to the tensor's scale, since sums over many
    terms of both signs (the tied embedding's gradient) differ in float32 with the order of summation, which
    sharding changes; a wrong weighting or clipping would be off by O(scale). Weights: ``atol``, given."""
    assert actual.keys() == expected.keys() and actual, what
    for name, value in actual.items():
        tolerance = 1e-5 * float(expected[name].abs().max()) if atol is None else atol
        torch.testing.assert_close(
            value, expected[name], rtol=1e-4, atol=tolerance, msg=lambda m, n=name: f"{what} differs on {n}: {m}"
        )


def assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """AdamW's step, lr * m / (sqrt(v) + eps), turns a gradient's relative float32 noise into eps / |g| times
    as much in the step: up to 1e-3 * lr on the few weights whose gradient is near eps. A wrong step (a missing
    or extra optimizer step, lost moments) is off by O(lr) on every weight."""
    assert_close(actual, expected, what, atol=1e-3 * LR)


@pytest.mark.slow
def test_fsdp_learners_match_one_learner_and_checkpoints_move_between_strategies(ray_cluster, small_model):
    batches = [synthetic_batch(rows=5, seed=seed) for seed in range(3)]  # odd: one shard carries a padding row
    groups: list[Learners] = []
    try:
        single, sharded = Learners(small_model, 0, "ddp"), Learners(small_model, 2, "fsdp")
        groups += [single, sharded]
        initial, _ = single.weights_and_gradients()
        loss, sharded_loss = single.update(batches[0]), sharded.update(batches[0])
        assert sharded_loss == pytest.approx(loss, rel=1e-5)
        weights, grads = single.weights_and_gradients()
        sharded_weights, sharded_grads = sharded.weights_and_gradients()
        assert_close(sharded_grads, grads, "the FSDP gradient")
        assert_same_weights(sharded_weights, weights, "the FSDP update")
        assert any(not torch.equal(weights[k], initial[k]) for k in initial), "the update changed no weights"

        # FSDP -> DDP: an unsharded learner resumed from the sharded ones' checkpoint holds their very weights
        # and takes the same next step as they do (AdamW's moments included, or it would differ by O(lr)).
        resumed = Learners(small_model, 0, "ddp")
        groups.append(resumed)
        resumed.set_state(sharded.get_state())
        resumed_weights = resumed.weights_and_gradients()[0]
        assert all(torch.equal(resumed_weights[k], sharded_weights[k]) for k in sharded_weights)
        resumed.update(batches[1])
        sharded.update(batches[1])
        assert_same_weights(
            resumed.weights_and_gradients()[0], sharded.weights_and_gradients()[0], "the step after resuming from FSDP"
        )

        # DDP -> FSDP: the sharded learners take the unsharded one's checkpoint and match its next step.
        sharded.set_state(resumed.get_state())
        resumed.update(batches[2])
        sharded.update(batches[2])
        assert_same_weights(
            sharded.weights_and_gradients()[0], resumed.weights_and_gradients()[0], "the step after resuming from DDP"
        )
    finally:
        for learners in groups:
            learners.group.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fsdp_trains_a_qwen25_05b_shaped_model_on_a_gpu(ray_cluster, tmp_path):
    """Two GRPO iterations with one FSDP learner (nccl, bfloat16 compute, gradient checkpointing) on Qwen2.5-0.5B's
    shape with random weights; the env runner samples on CPU."""
    import math

    from agents.training.rllib import GRPOConfig

    qwen25_shaped_checkpoint(tmp_path, "0.5B")
    config = (
        GRPOConfig()
        .training(prompts_per_batch=1, group_size=2, lr=1e-5)
        .rollouts(max_new_tokens=4, max_turns=1)
        .policy(model=str(tmp_path), strategy="fsdp", gradient_checkpointing=True)
        .learners(num_learners=1, num_gpus_per_learner=1)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        for iteration in (1, 2):
            result = algo.train()
            assert result["training_iteration"] == iteration
        assert math.isfinite(result["charts/episodic_return"])
    finally:
        algo.stop()


@pytest.mark.slow
def test_grpo_iteration_with_fsdp_learners_syncs_the_updated_weights_to_the_runner(ray_cluster):
    """A whole GRPO iteration on CPU with two FSDP learners (gloo): the env runner samples with the weights the
    sharded learners produced, gathered on learner 0."""
    from agents.training.rllib import GRPOConfig

    config = (
        GRPOConfig()
        .training(prompts_per_batch=2, group_size=2, lr=1e-2)
        .rollouts(max_new_tokens=4, max_turns=1)
        .policy(strategy="fsdp")
        .learners(num_learners=2, num_cpus_per_learner=0.5)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        initial = {k: v.clone() for k, v in runner.module.get_state().items()}
        algo.train()
        learned = algo.learner_group.get_state()["learner"]["rl_module"][DEFAULT_MODULE_ID]
        synced = runner.module.get_state()
    finally:
        algo.stop()
    assert synced.keys() == learned.keys() == initial.keys()
    assert any(not torch.equal(initial[k], learned[k]) for k in learned), "the update changed nothing"
    assert all(torch.equal(synced[k], learned[k]) for k in learned), "the runner samples with stale weights"


@pytest.mark.parametrize(
    ("policy", "learners", "field"),
    [
        ({"strategy": "fsdp"}, 0, "num_learners"),
        ({"strategy": "fsdp", "lora": {"r": 4}}, 2, "lora"),
        ({"strategy": "zero3"}, 2, "strategy"),
        ({"dtype": "fp16"}, 0, "dtype"),
    ],
)
def test_config_rejects_learner_settings_it_cannot_run(policy, learners, field):
    from agents.training.rllib import GRPOConfig

    with pytest.raises(ValueError, match=field):
        GRPOConfig().policy(**policy).learners(num_learners=learners).validate()
