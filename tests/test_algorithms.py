"""The GRPO-family pieces against hand-worked values: advantages, the clipped loss, k3 KL, masking,
and per-token log-probs of a real (tiny) causal LM."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import Qwen2Config, Qwen2ForCausalLM

from agents.training.algorithms import (
    ALGORITHMS,
    LossConfig,
    Trajectory,
    collate,
    compute_advantages,
    get_algorithm,
    k3_kl,
    policy_loss,
    register_advantage_estimator,
    token_logprobs,
)

REWARDS = torch.tensor([1.0, 0.1, 0.1, 0.0, 0.5, 0.7])
GROUPS = torch.tensor([0, 0, 0, 0, 1, 1])


def test_grpo_normalises_within_each_group():
    adv = compute_advantages("grpo", REWARDS, GROUPS)
    g0 = REWARDS[:4]
    assert torch.allclose(adv[:4], (g0 - g0.mean()) / (g0.std() + 1e-6))  # unbiased std, as torch.std
    assert torch.allclose(adv[4:], torch.tensor([-0.7071, 0.7071]), atol=1e-3)


def test_dr_grpo_rloo_and_reinforce_pp_baselines():
    assert torch.allclose(
        compute_advantages("dr_grpo", REWARDS, GROUPS), torch.tensor([0.7, -0.2, -0.2, -0.3, -0.1, 0.1]), atol=1e-6
    )
    # RLOO: r_i minus the mean of the other rollouts of its group
    assert torch.allclose(compute_advantages("rloo", REWARDS, GROUPS)[0], torch.tensor(1.0 - 0.2 / 3), atol=1e-6)
    assert torch.allclose(compute_advantages("rloo", REWARDS, GROUPS)[4], torch.tensor(-0.2), atol=1e-6)
    pp = compute_advantages("reinforce_pp_baseline", REWARDS, GROUPS)
    assert abs(pp.mean().item()) < 1e-6 and abs(pp.std().item() - 1) < 1e-4  # normalised over the batch


def test_a_group_of_one_keeps_its_reward_and_equal_rewards_give_zero():
    assert compute_advantages("grpo", torch.tensor([0.3]), torch.tensor([5])).tolist() == pytest.approx([0.3])
    assert compute_advantages("grpo", torch.tensor([0.4, 0.4]), torch.tensor([1, 1])).tolist() == [0.0, 0.0]


@given(st.lists(st.floats(0, 1), min_size=2, max_size=12), st.integers(1, 4))
def test_group_advantages_sum_to_zero_per_group(rewards, n_groups):
    r = torch.tensor(rewards)
    g = torch.arange(len(rewards)) % n_groups
    for name in ("grpo", "dr_grpo", "rloo"):
        adv = compute_advantages(name, r, g)
        for group in g.unique():
            if (g == group).sum() > 1:
                assert abs(adv[g == group].sum().item()) < 1e-4


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown advantage"):
        compute_advantages("nope", REWARDS, GROUPS)
    with pytest.raises(ValueError, match="unknown algorithm"):
        get_algorithm("nope")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        policy_loss(
            torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), torch.ones(1, 2), LossConfig(aggregation="nope")
        )


def test_adding_an_algorithm_is_two_registrations():
    from agents.training.algorithms import AlgorithmSpec

    @register_advantage_estimator("raw_reward")
    def raw(rewards, group_ids):
        return rewards

    ALGORITHMS["vanilla_pg"] = AlgorithmSpec("raw_reward")
    try:
        assert compute_advantages(get_algorithm("vanilla_pg").advantage, REWARDS, GROUPS).tolist() == REWARDS.tolist()
    finally:
        del ALGORITHMS["vanilla_pg"]


def test_k3_kl_is_zero_at_equality_and_positive_elsewhere():
    logp = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    assert torch.allclose(k3_kl(logp, logp), torch.zeros(3))
    ref = torch.log(torch.tensor([0.3, 0.4, 0.8]))
    kl = k3_kl(logp, ref)
    assert (kl > 0).all()
    assert kl[0].item() == pytest.approx(1.5 - math.log(1.5) - 1, rel=1e-5)


def test_loss_at_ratio_one_is_minus_the_mean_advantage_over_policy_tokens():
    logp = torch.log(torch.full((2, 4), 0.5))
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]], dtype=torch.float32)
    loss, metrics = policy_loss(logp, logp, torch.tensor([1.0, -2.0]), mask, LossConfig(kl_coef=0, entropy_coef=0))
    assert loss.item() == pytest.approx((-1 - 1 + 2) / 3)  # token mean over the 3 policy tokens
    assert metrics["losses/clipfrac"] == 0 and metrics["losses/approx_kl"] == pytest.approx(0, abs=1e-7)
    dr, _ = policy_loss(
        logp,
        logp,
        torch.tensor([1.0, -2.0]),
        mask,
        LossConfig(kl_coef=0, entropy_coef=0, aggregation="constant_norm", max_response_tokens=10),
    )
    assert dr.item() == pytest.approx(0 / (2 * 10))


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.9, 0.55]])).requires_grad_()  # ratios 1.8 (clipped) and 1.1
    loss, metrics = policy_loss(new, old, torch.tensor([1.0]), torch.ones(1, 2), LossConfig(kl_coef=0, entropy_coef=0))
    loss.backward()
    assert new.grad[0, 0].item() == 0.0 and new.grad[0, 1].item() < 0  # raise only the unclipped token
    assert metrics["losses/clipfrac"] == 0.5


def test_masked_tokens_get_no_gradient():
    logp = torch.zeros(1, 3, requires_grad=True)
    ref, entropy = torch.full((1, 3), -0.5), torch.ones(1, 3)
    loss, _ = policy_loss(
        logp,
        logp.detach(),
        torch.tensor([1.0]),
        torch.tensor([[1.0, 0.0, 1.0]]),
        LossConfig(),
        ref_logprobs=ref,
        entropy=entropy,
    )
    loss.backward()
    assert logp.grad[0, 1].item() == 0.0 and logp.grad[0, 0].item() != 0.0


def _tiny_lm() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
            head_dim=32,
        )
    )


def test_token_logprobs_match_a_full_log_softmax():
    model = _tiny_lm().eval()
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones_like(ids)
    logp, entropy = token_logprobs(model, ids, mask, with_entropy=True)
    full = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
    expected = full[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert logp.shape == ids.shape and (logp[:, 0] == 0).all()
    assert torch.allclose(logp[:, 1:], expected, atol=1e-5)
    assert torch.allclose(entropy[:, 1:], -(full.exp() * full).sum(-1)[:, :-1], atol=1e-4)


def test_collate_right_pads_and_keeps_masks():
    a = Trajectory([1, 2, 3], [0, 1, 1], [0.0, -0.5, -0.1], 1.0, 0)
    b = Trajectory([4, 5], [0, 1], [0.0, -0.2], 0.0, 0)
    batch = collate([a, b], torch.tensor([0.7, -0.7]), pad_token_id=9)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1], [0, 1, 0]]
    assert batch["old_logprobs"][1].tolist() == pytest.approx([0.0, -0.2, 0.0])


def _gradient(trajectories: list[Trajectory], advantages: torch.Tensor, settings) -> dict[str, torch.Tensor]:
    from agents.training.torch_loop import grpo_update

    model = _tiny_lm()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that leaves the weights, and the grads
    grpo_update(model, None, optimizer, trajectories, advantages, settings, pad_token_id=0)
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_a_registered_aggregation_splits_over_micro_batches_and_learners_without_edits_elsewhere():
    """A new aggregation (the mean over trajectories of each trajectory's token mean) is only registered; the
    plain loop's micro-batches and the RLlib learners' shards must still give the whole batch's loss."""
    from agents.training.algorithms import AlgorithmSpec, register_loss_aggregator, trajectory_share
    from agents.training.algorithms.losses import LOSS_AGGREGATORS
    from agents.training.rllib.algorithm import learner_shards
    from agents.training.settings import GRPOSettings

    @register_loss_aggregator("sequence_mean", row_share=trajectory_share)
    def sequence_mean(per_token, mask, config):
        return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()

    ALGORITHMS["seq_pg"] = AlgorithmSpec("grpo", "sequence_mean")
    try:
        g = torch.Generator().manual_seed(1)
        trajectories = [
            Trajectory(
                torch.randint(1, 50, (n,), generator=g).tolist(),
                [0] * 3 + [1] * (n - 3),
                [0.0] * 3 + [-3.9] * (n - 3),
                0.0,
                i // 2,
            )
            for i, n in enumerate((9, 5, 12, 6, 7))
        ]
        advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0])
        config = dict(algorithm="seq_pg", kl_coef=0.0, entropy_coef=0.0, prompts_per_batch=3, group_size=2)
        whole = _gradient(trajectories, advantages, GRPOSettings(micro_batch_size=5, **config))
        split = _gradient(trajectories, advantages, GRPOSettings(micro_batch_size=1, **config))
        for name, grad in whole.items():
            torch.testing.assert_close(split[name], grad, rtol=1e-4, atol=1e-6)

        # The learners' shard weights: the weighted shard losses add up to the whole batch's loss.
        batch = collate(trajectories, advantages, pad_token_id=0)
        per_token = torch.randn(batch["loss_mask"].shape, generator=g)
        loss_config = LossConfig(aggregation="sequence_mean")
        whole_loss = float(sequence_mean(per_token, batch["loss_mask"], loss_config))
        for learners in (2, 3):  # 2: a shard mixes real rows and padding; 3: a shard is padding alone
            shards = learner_shards(dict(batch, per_token=per_token), "sequence_mean", num_learners=learners)
            total = 0.0
            for shard in shards:
                rows = shard.policy_batches["default_policy"]
                weights = torch.as_tensor(rows["loss_weight"])
                real = weights > 0 if (weights > 0).any() else torch.ones_like(weights, dtype=torch.bool)
                mask = torch.as_tensor(rows["loss_mask"])[real]  # the learner's micro-batch drops padding rows
                part = sequence_mean(torch.as_tensor(rows["per_token"])[real], mask, loss_config)
                total += float(part * weights.sum()) / len(shards)  # DDP averages over the learners
            assert total == pytest.approx(whole_loss, rel=1e-5), learners
    finally:
        del ALGORITHMS["seq_pg"], LOSS_AGGREGATORS["sequence_mean"]
