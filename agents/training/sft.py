"""Supervised warm start on oracle traces (``--sft-warmstart``): a policy that has never written a valid
``<search>``/``<answer>`` gets no reward signal from GRPO, so it first imitates the MuSiQue oracle.

Each SFT sequence is built by stepping the *same* token env that rollouts use (``TokenizedEnv``): the env's
text is tokenised segment by segment exactly as in a rollout, and the loss mask is the env's ``policy_mask``
(result blocks and the prompt never carry loss). Noisy copies corrupt search queries and mask the corruption
out of the loss, so that the model learns to carry on after a bad query instead of only on perfect contexts.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import torch
from transformers import PreTrainedModel

from agents.evaluation.oracle import answer_action, oracle_hops, search_action
from agents.training.algorithms import collate_tokens, masked_mean, masked_token_logprobs
from research_env.data import QARecord
from research_env.protocol import SEARCH_OPEN


def guess_action(guess: str, eos_token: str) -> str:
    """A chunk that answers at once, without searching: the warm start's imitation of a policy that guesses."""
    return (
        f"<think> I can answer this directly: {guess}. </think>\n"
        f"<answer> The answer is \\boxed{{{guess}}} </answer>{eos_token}"
    )


def corrupt_words(text: str, rng: random.Random, vocabulary: Sequence[str], max_edits: int = 3) -> str:
    """1 to ``max_edits`` word edits (delete, replace, insert or swap neighbours), never returning ``text``:
    the kind of off-token slip a policy sampled at temperature 1 makes in a query."""
    original = text.split()
    for _ in range(10):
        words = list(original)
        for _ in range(rng.randint(1, max_edits)):
            op = rng.choice(("delete", "replace", "insert", "swap"))
            i = rng.randrange(len(words))
            if op == "delete" and len(words) > 1:
                del words[i]
            elif op == "replace":
                words[i] = rng.choice(vocabulary)
            elif op == "swap" and len(words) > 1:
                j = min(i + 1, len(words) - 1) if i < len(words) - 1 else i - 1
                words[i], words[j] = words[j], words[i]
            else:
                words.insert(i, rng.choice(vocabulary))
        if words != original:
            return " ".join(words)
    return " ".join([*original, rng.choice(vocabulary)])


@dataclass
class SFTExample:
    """One oracle episode as token ids. ``loss_mask`` is ``policy_mask`` with corrupted spans zeroed."""

    question_id: str
    input_ids: list[int]
    policy_mask: list[int]
    loss_mask: list[int]
    actions: list[str]
    reward: float
    corrupted: int = 0  # how many queries were corrupted


def build_sft_example(
    env: gym.Env,
    question_id: str,
    *,
    noise_p: float = 0.0,
    rng: random.Random | None = None,
    vocabulary: Sequence[str] = (),
    guess: str | None = None,
) -> SFTExample:
    """Play the oracle's actions on a token env (``TokenizedEnv``, possibly under ``Budget``) and keep its ids.

    With ``guess`` the episode instead answers ``guess`` at once, without searching (:func:`guess_action`).

    With ``noise_p > 0`` each hop's search query (from the second hop on it carries the previous hop's answer)
    is corrupted with that probability by :func:`corrupt_words`; the env searches the corrupted query (BM25
    sees what a slipping policy would send), and the corrupted query's tokens carry no loss.
    """
    rng = rng or random.Random(0)
    observation, _ = env.reset(options={"question_id": question_id})
    inner = env.unwrapped
    record = inner.record
    tokenizer = env.get_wrapper_attr("tokenizer")
    if guess is not None:
        observation, reward, *_ = env.step(guess_action(guess, inner.eos_token))
        return SFTExample(
            question_id,
            list(observation["input_ids"]),
            list(observation["policy_mask"]),
            list(observation["policy_mask"]),
            [guess_action(guess, inner.eos_token)],
            float(reward),
        )
    corrupted_spans: list[tuple[int, int]] = []  # token positions [start, end) carrying no loss
    actions: list[str] = []
    reward, done = 0.0, False
    for hop_question, query in oracle_hops(record):
        noisy = noise_p > 0 and rng.random() < noise_p
        if noisy:
            query = corrupt_words(query, rng, vocabulary or query.split())
        action = search_action(hop_question, query)
        start = len(observation["input_ids"])
        observation, reward, terminated, truncated, _ = env.step(action)
        actions.append(action)
        if noisy:
            ids = observation["input_ids"][start:]
            query_start = action.rindex(f"{SEARCH_OPEN} ") + len(SEARCH_OPEN)
            corrupted_spans.append(_token_span(tokenizer, ids, query_start, query_start + len(query) + 1, start))
        if terminated or truncated:
            done = True
            break
    if not done:
        action = answer_action(record.golden_answers[0], inner.eos_token)
        observation, reward, *_ = env.step(action)
        actions.append(action)
    policy_mask = list(observation["policy_mask"])
    loss_mask = list(policy_mask)
    for start, end in corrupted_spans:
        loss_mask[start:end] = [0] * (end - start)
    return SFTExample(
        question_id,
        list(observation["input_ids"]),
        policy_mask,
        loss_mask,
        actions,
        float(reward),
        len(corrupted_spans),
    )


def _token_span(tokenizer, ids: list[int], char_start: int, char_end: int, offset: int) -> tuple[int, int]:
    """Token positions (shifted by ``offset``) of the ids whose decoded characters overlap [char_start, char_end)."""
    ends = [
        len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        for i in range(len(ids))
    ]
    starts = [0, *ends[:-1]]
    hit = [i for i, (a, b) in enumerate(zip(starts, ends, strict=True)) if a < char_end and b > char_start]
    return offset + hit[0], offset + hit[-1] + 1


def build_sft_dataset(
    env: gym.Env,
    question_ids: Sequence[str],
    *,
    noisy_copies: int = 0,
    noise_p: float = 0.5,
    seed: int = 0,
    no_search_share: float = 0.0,
) -> list[SFTExample]:
    """One clean oracle example per question, plus ``noisy_copies`` noisy ones (see :func:`build_sft_example`).

    With ``no_search_share`` > 0 that share of the clean examples answer at once instead, with the gold answer of
    another question of the same answer type (the last hop's ``answer_type``, where the decomposition gives one):
    a warm start that searches only some of the time, so that reinforcement learning, not imitation, has to
    make the policy search (see ``benchmarks/learning.py --task synthetic``).
    """
    rng = random.Random(seed)
    dataset = env.unwrapped.dataset
    records = [dataset[dataset.index_of(qid)] for qid in question_ids]
    vocabulary = sorted({w for record in records for w in record.question.split()})
    guesses = _wrong_guesses(records, no_search_share, random.Random(f"guess-{seed}"))
    examples = [build_sft_example(env, qid, guess=guesses.get(qid)) for qid in question_ids]
    for _ in range(noisy_copies):
        examples += [
            build_sft_example(env, qid, noise_p=noise_p, rng=rng, vocabulary=vocabulary) for qid in question_ids
        ]
    return examples


def _wrong_guesses(records: Sequence[QARecord], share: float, rng: random.Random) -> dict[str, str]:
    """For ``share`` of the questions, drawn with ``rng``: the gold answer of another question of its answer type
    that is not one of its own gold answers."""

    def answer_type(record: QARecord) -> str:
        return ((record.metadata.get("question_decomposition") or [{}])[-1]).get("answer_type", "")

    by_type: dict[str, list[str]] = {}
    for record in records:
        by_type.setdefault(answer_type(record), []).append(record.golden_answers[0])
    guesses = {}
    for record in rng.sample(list(records), round(share * len(records))):
        candidates = [a for a in by_type[answer_type(record)] if a not in record.golden_answers]
        if candidates:
            guesses[record.id] = rng.choice(candidates)
    return guesses


@dataclass
class SFTConfig:
    """20 epochs at lr 3e-3 in batches of 4 (800 optimizer steps on 80 questions with one noisy copy).

    Measured on the 1.4M-parameter small-vocabulary model, 80 questions: this recipe (top-1 passages)
    reached a loss of 0.03 and greedy reward 1.0 on 16 training questions; batches of 16 at lr 5e-3
    (200 steps, top-3 passages) stopped at 0.31, with greedy reward 0.08: the format, not the answers.
    """

    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 4
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0


def sft_loss(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood per policy token (masked token mean), the imitation counterpart of the GRPO loss."""
    logprobs, _ = masked_token_logprobs(model, input_ids, attention_mask, loss_mask)  # [B, T], 0 off the mask
    return -masked_mean(logprobs, loss_mask)


def sft_train(
    model: PreTrainedModel,
    examples: Sequence[SFTExample],
    config: SFTConfig,
    pad_token_id: int,
    log: Callable[[str], None] = print,
) -> list[float]:
    """AdamW with linear warmup and cosine decay over ``config.epochs`` shuffled passes; returns epoch losses.

    Batches are drawn from length-sorted buckets so that padding stays small (sequences differ by 3x).
    """
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.epochs * batches_per_epoch

    def schedule(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - config.warmup_steps) / max(1, total - config.warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    by_length = sorted(examples, key=lambda e: len(e.input_ids))
    buckets = [by_length[i : i + config.batch_size] for i in range(0, len(by_length), config.batch_size)]
    model.train()
    epoch_losses = []
    for epoch in range(config.epochs):
        started, losses = time.perf_counter(), []
        for bucket in rng.sample(buckets, len(buckets)):
            batch = collate_tokens([e.input_ids for e in bucket], [e.loss_mask for e in bucket], pad_token_id)
            loss = sft_loss(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
        elapsed = time.perf_counter() - started
        log(f"sft epoch {epoch + 1}/{config.epochs}: loss {epoch_losses[-1]:.3f} ({elapsed:.1f}s)")
    return epoch_losses
