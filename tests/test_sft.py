"""SFT warm start: sequences are built exactly as rollouts build them, and only the policy's own, uncorrupted
tokens carry loss."""

from __future__ import annotations

import random

import gymnasium as gym
import pytest
import torch

import research_env  # noqa: F401
from agents.evaluation.oracle import run_oracle_episode
from agents.generation.rollout import RolloutConfig, token_env
from agents.policies.small_vocab import small_qwen2
from agents.training.algorithms import collate_tokens, token_logprobs
from agents.training.sft import (
    SFTConfig,
    build_sft_dataset,
    build_sft_example,
    corrupt_words,
    sft_loss,
    sft_train,
)
from research_env.protocol import RESULT_CLOSE, RESULT_OPEN

CONFIG = RolloutConfig(max_new_tokens=64, max_tokens=4096)


def make_env(tokenizer):
    return token_env(gym.make("ReSearch-MuSiQue-v0", top_k=1), tokenizer, CONFIG)


@pytest.mark.parametrize("noise_p", [0.0, 1.0])
def test_sft_sequence_is_what_the_token_env_builds(small_vocab, noise_p):
    tokenizer, ids = small_vocab
    example = build_sft_example(
        make_env(tokenizer), ids[0], noise_p=noise_p, rng=random.Random(1), vocabulary=["alpha", "beta"]
    )
    replay = make_env(tokenizer)
    observation, _ = replay.reset(options={"question_id": ids[0]})
    for action in example.actions:
        observation, *_ = replay.step(action)
    assert example.input_ids == observation["input_ids"]
    assert example.policy_mask == observation["policy_mask"]
    if noise_p == 0:
        assert example.reward == 1.0
        oracle = make_env(tokenizer)
        run_oracle_episode(oracle, ids[0])  # the clean SFT actions are the oracle's own
        assert tokenizer.decode(example.input_ids) == oracle.unwrapped.prompt + oracle.unwrapped.response


def test_loss_only_on_policy_tokens_and_never_on_results_or_corruption(small_vocab):
    tokenizer, ids = small_vocab
    example = build_sft_example(
        make_env(tokenizer), ids[1], noise_p=1.0, rng=random.Random(0), vocabulary=["alpha", "beta"]
    )
    assert all(p >= m for p, m in zip(example.policy_mask, example.loss_mask, strict=True))
    trained = tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])
    env_written = tokenizer.decode([t for t, p in zip(example.input_ids, example.policy_mask, strict=True) if not p])
    assert RESULT_OPEN not in trained and RESULT_CLOSE not in trained
    # the prompt's instructions mention the tags too; a result block starts with " <result>\n"
    assert env_written.count(f" {RESULT_OPEN}\n") == example.corrupted == len(example.actions) - 1
    masked_policy = [
        t for t, p, m in zip(example.input_ids, example.policy_mask, example.loss_mask, strict=True) if p and not m
    ]
    queries = [a.split("<search>")[1].split("</search>")[0].strip() for a in example.actions[:-1]]
    assert tokenizer.decode(masked_policy).split() == " ".join(queries).split()  # exactly the corrupted queries


def test_corrupt_words_always_edits():
    rng = random.Random(0)
    for _ in range(200):
        assert corrupt_words("Edward Baring father", rng, ["x", "y"]) != "Edward Baring father"


def test_sft_loss_is_masked_nll_and_training_lowers_it(small_vocab):
    tokenizer, ids = small_vocab
    examples = build_sft_dataset(make_env(tokenizer), ids[:2], noisy_copies=1)
    model = small_qwen2(tokenizer, seed=0)
    batch = collate_tokens([e.input_ids for e in examples], [e.loss_mask for e in examples], tokenizer.pad_token_id)
    with torch.no_grad():
        loss = sft_loss(model, **batch)
        full, _ = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    expected = -(full * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
    assert torch.allclose(loss, expected, atol=1e-5)
    losses = sft_train(
        model,
        examples,
        SFTConfig(epochs=4, lr=5e-3, batch_size=4, warmup_steps=1),
        tokenizer.pad_token_id,
        log=lambda _: None,
    )
    assert losses[-1] < losses[0]


def test_a_saved_small_vocab_policy_loads_the_tokenizer_it_was_trained_with(small_vocab, tmp_path):
    """Beside a Qwen2 config.json, AutoTokenizer would load Qwen2Tokenizer, whose own pre-tokenizer splits
    digits: every number would be encoded differently from SFT. The checkpoint must load as saved."""
    from agents.policies.models import load_causal_lm

    tokenizer, _ = small_vocab
    small_qwen2(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, loaded = load_causal_lm(tmp_path, device="cpu")
    text = "Edward Baring, 1st Baron Revelstoke, born 1828; <search> 2,000 </search><|endoftext|>"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert (loaded.eos_token, loaded.pad_token_id) == (tokenizer.eos_token, tokenizer.pad_token_id)


def test_plain_autotokenizer_loads_the_exact_tokenizer_from_exact_tokenizer_dir(small_vocab, tmp_path):
    """What vLLM does (AutoTokenizer on the directory it is given) must read the small vocabulary as trained."""
    from transformers import AutoTokenizer

    from research_env.tokenizer import exact_tokenizer_dir

    tokenizer, _ = small_vocab
    checkpoint = tmp_path / "policy"
    small_qwen2(tokenizer).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    exact = exact_tokenizer_dir(checkpoint, cache_dir=tmp_path / "cache")
    assert exact != checkpoint and not (exact / "config.json").exists()
    assert exact_tokenizer_dir(checkpoint, cache_dir=tmp_path / "cache") == exact  # cached by contents
    text = "Edward Baring, 1st Baron Revelstoke, born 1828; <search> 2,000 </search><|endoftext|>"
    assert AutoTokenizer.from_pretrained(exact).encode(text) == tokenizer.encode(text)
