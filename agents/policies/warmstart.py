"""The policy a GRPO run starts from, written as a local checkpoint directory that every learner and env
runner loads by path (``--small-vocab``, ``--sft-warmstart``).

GRPO needs reward variance within a group. A randomly initialised model never writes a valid
``<search>``/``<answer>`` transcript, so every reward is 0 and there is nothing to learn from; a supervised
warm start on oracle traces (``agents.training.sft``) fixes that. ``small_vocab`` swaps the 151k-token Qwen2.5
vocabulary for an 8,192-token BPE trained on the training questions' traces (``agents.policies.small_vocab``), which
makes CPU runs fast enough to show learning. The checkpoint is built once per run directory: a resumed run
reuses it, so it restarts from the same reference policy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from agents.generation.rollout import RolloutConfig, token_env
from agents.policies.models import load_causal_lm
from agents.policies.small_vocab import oracle_trace_texts, small_qwen2, train_small_tokenizer
from agents.training.sft import SFTConfig, build_sft_dataset, sft_train
from research_env.staging import staged_directory


@dataclass
class WarmStart:
    """What to build: ``model`` (a checkpoint directory, None: the tiny default) or, with ``small_vocab``,
    a fresh small-vocabulary model (``split_names``: its BPE learns syllables of synthetic-world names); then,
    with ``sft``, SFT on the oracle traces of ``question_ids``, ``no_search_share`` of them answering at once
    with a wrong guess instead (``agents.training.sft.build_sft_dataset``)."""

    question_ids: Sequence[str]
    model: str | None = None
    small_vocab: bool = False
    sft: SFTConfig | None = None
    noisy_copies: int = 1
    no_search_share: float = 0.0
    split_names: bool = False
    seed: int = 0
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(max_new_tokens=96, max_tokens=4096))


def prepare_policy(
    directory: str | os.PathLike,
    make_env: Callable[[], gym.Env],
    warm_start: WarmStart,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the starting policy into ``directory`` (model and tokenizer) unless it already holds one.

    Written to a temporary sibling and renamed into place, so a run killed mid-SFT leaves no half-written
    checkpoint that a later ``--resume`` would mistake for the real one.
    """
    target = Path(directory)
    if (target / "config.json").is_file():
        log(f"warm start: reusing {target}")
        return target
    if not warm_start.question_ids:
        raise ValueError("a warm start needs training questions (question_ids is empty)")
    started = time.perf_counter()
    env = make_env()
    try:
        model, tokenizer = _initial_policy(env, warm_start)
        if warm_start.sft is not None:
            examples = build_sft_dataset(
                token_env(env, tokenizer, warm_start.rollout),
                warm_start.question_ids,
                noisy_copies=warm_start.noisy_copies,
                seed=warm_start.seed,
                no_search_share=warm_start.no_search_share,
            )
            log(f"warm start: SFT on {len(examples)} oracle traces of {len(warm_start.question_ids)} questions")
            sft_train(model, examples, warm_start.sft, tokenizer.pad_token_id, log=log)
    finally:
        env.close()
    with staged_directory(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    log(f"warm start: wrote {target} ({time.perf_counter() - started:.0f}s)")
    return target


def _initial_policy(env: gym.Env, warm_start: WarmStart) -> tuple[Any, Any]:
    if not warm_start.small_vocab:
        return load_causal_lm(warm_start.model, device="cpu", dtype=torch.float32)
    if warm_start.model is not None:
        raise ValueError("small_vocab builds its own model; it cannot be combined with model=PATH")
    tokenizer = train_small_tokenizer(
        oracle_trace_texts(env, warm_start.question_ids), split_names=warm_start.split_names
    )
    return small_qwen2(tokenizer, seed=warm_start.seed), tokenizer
