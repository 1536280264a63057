"""GRPO's learners on real Ray: two CPU learners under gloo DDP average their gradients and stay identical,
and their update equals one learner's update on the whole batch; LoRA updates only the adapters; GPU
learners (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

ray = pytest.importorskip("ray")

from ray.rllib.core import DEFAULT_MODULE_ID  # noqa: E402

from agents.training.rllib import GRPOConfig  # noqa: E402
from agents.training.rllib.module import TOKEN_SPACE, TRANSCRIPT_SPACE  # noqa: E402

SPACES = {DEFAULT_MODULE_ID: (TRANSCRIPT_SPACE, TOKEN_SPACE)}


def synthetic_batch(rows: int = 4, length: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch shaped like ``collate``'s: ragged rows, prompt tokens masked out, mixed-sign advantages."""
    g = torch.Generator().manual_seed(seed)
    lengths = [length - 3 * (i % 3) for i in range(rows)]
    input_ids = torch.randint(0, 5000, (rows, length), generator=g)
    attention = torch.zeros(rows, length, dtype=torch.long)
    loss_mask = torch.zeros(rows, length)
    for i, n in enumerate(lengths):
        attention[i, :n] = 1
        loss_mask[i, 8 + i : n] = 1  # a prompt of 8 + i tokens
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "loss_mask": loss_mask,
        "old_logprobs": -11.9 + 0.1 * torch.randn(rows, length, generator=g) * loss_mask,
        "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5] * rows)[:rows],
    }


def config(num_learners: int, **training) -> GRPOConfig:
    return (
        GRPOConfig()
        .training(lr=1e-2, kl_coef=0.1, micro_batch_size=1, **training)
        .learners(num_learners=num_learners)
        .debugging(seed=0)
    )


def update(cfg: GRPOConfig, batch: dict[str, torch.Tensor]) -> list[tuple[dict, dict]]:
    """One update through GRPO's own weighting and sharding; every learner's (weights, gradients) after it."""
    from agents.training.rllib.algorithm import learner_shards

    def weights_and_gradients(learner) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        # Nested, so that Ray ships it by value to the learner actors (the tests are not importable there).
        model = learner.module[DEFAULT_MODULE_ID].unwrapped().model
        return (
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
        )

    shards = learner_shards(dict(batch), "token_mean", cfg.num_learners)
    group = cfg.build_learner_group(rl_module_spec=cfg.get_multi_rl_module_spec(spaces=SPACES))
    try:
        if group.is_remote:
            group.update(batches=shards)
            return [result.get() for result in group.foreach_learner(weights_and_gradients)]
        group.update(batch=shards[0])
        return [weights_and_gradients(group._learner)]
    finally:
        group.shutdown()


@pytest.mark.slow
def test_two_learners_average_gradients_and_stay_identical(ray_cluster):
    from agents.policies.models import load_causal_lm

    batch = synthetic_batch(rows=5)  # odd: one learner's shard is padded with a row that carries no loss
    initial = load_causal_lm(None, device="cpu")[0].state_dict()
    (weights, grads), (weights2, grads2) = update(config(num_learners=2), batch)
    ((_, single_grads),) = update(config(num_learners=0), batch)
    assert grads.keys() == single_grads.keys() and grads
    for name, grad in grads.items():
        # Each learner saw part of the batch: equal gradients mean DDP averaged them, and the loss weights
        # made the average the gradient of the whole batch, up to float32 summation order. That order
        # matters on the tied embedding, whose gradient sums many terms of opposite sign, so the absolute
        # tolerance is relative to the tensor's own scale; a wrong weighting would be off by O(scale).
        assert torch.equal(grad, grads2[name]), f"learners hold different gradients for {name}"
        scale = float(single_grads[name].abs().max())
        torch.testing.assert_close(
            grad,
            single_grads[name],
            rtol=1e-4,
            atol=1e-5 * scale,
            msg=lambda m, n=name: f"DDP gradient differs from one learner's on {n}: {m}",
        )
    for name, value in weights.items():
        assert torch.equal(value, weights2[name]), f"learners' weights diverged on {name}"
    assert any(not torch.equal(weights[k], initial[k]) for k in initial), "the update changed no weights"


@pytest.mark.slow
def test_lora_update_changes_only_adapters(ray_cluster):
    pytest.importorskip("peft")
    cfg = config(num_learners=0).policy(lora={"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})
    group = cfg.build_learner_group(rl_module_spec=cfg.get_multi_rl_module_spec(spaces=SPACES))
    try:
        module = group._learner.module[DEFAULT_MODULE_ID].unwrapped()
        before = {k: v.clone() for k, v in module.model.state_dict().items()}
        batch = synthetic_batch()
        batch["loss_weight"] = torch.full((4,), 0.25)
        from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

        group.update(
            batch=MultiAgentBatch(
                {DEFAULT_MODULE_ID: SampleBatch({k: v.numpy() for k, v in batch.items()})}, env_steps=4
            )
        )
        after = module.model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed and all(".lora_" in k for k in changed), sorted(changed)[:5]
        assert set(module.get_state()) == {k for k in after if ".lora_" in k}  # only adapters are shipped
    finally:
        group.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_learner_update(ray_cluster):
    cfg = config(num_learners=1).learners(num_gpus_per_learner=1)
    ((weights, grads),) = update(cfg, synthetic_batch())
    assert grads and all(torch.isfinite(g).all() for g in grads.values())


def local_learner(cfg: GRPOConfig):
    group = cfg.build_learner_group(rl_module_spec=cfg.get_multi_rl_module_spec(spaces=SPACES))
    return group, group._learner


def one_shard(batch: dict[str, torch.Tensor]):
    from agents.training.rllib.algorithm import learner_shards

    return learner_shards(dict(batch), "token_mean", 0)[0]


@pytest.mark.slow
def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients(ray_cluster):
    batch = synthetic_batch()
    grads, calls = {}, {}
    for checkpointing in (False, True):
        group, learner = local_learner(
            config(num_learners=0).training(micro_batch_size=4).policy(gradient_checkpointing=checkpointing)
        )
        try:
            model = learner.module[DEFAULT_MODULE_ID].unwrapped().model
            calls[checkpointing] = 0

            def count(*_, c=checkpointing) -> None:
                calls[c] += 1

            # Inside the layer, as transformers checkpoints a layer's __call__ or (5.24) its forward; a pre-hook,
            # as torch stops a recomputation once it has what the backward needs, before the mlp returns.
            model.get_decoder().layers[0].mlp.register_forward_pre_hook(count)
            group.update(batch=one_shard(batch))
            grads[checkpointing] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        finally:
            group.shutdown()
    assert calls == {False: 1, True: 2}, "with checkpointing, the backward pass runs each layer's forward again"
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_bfloat16_policy_gives_float32_logprobs_and_no_reference_without_kl(ray_cluster):
    group, learner = local_learner(config(num_learners=0).training(kl_coef=0.0).policy(dtype="bfloat16"))
    try:
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        assert module.reference is None, "kl_coef=0 needs no reference model"
        assert {p.dtype for p in module.model.parameters()} == {torch.bfloat16}
        batch = synthetic_batch()
        out = module.forward_train({k: batch[k] for k in ("input_ids", "attention_mask", "loss_mask")})
        assert out["logprobs"].dtype == torch.float32 and "ref_logprobs" not in out
        results = group.update(batch=one_shard(batch))
        assert torch.isfinite(torch.tensor(float(results[0][DEFAULT_MODULE_ID]["total_loss"].peek())))
    finally:
        group.shutdown()
