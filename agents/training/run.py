"""What a training run sets up before its loop, the same for both trainers: the env of a split in this process,
the warm-started policy written to DIR/policy, and the held-out evaluation of ``--eval-every``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agents.training.cli import env_kwargs


def local_env(args: argparse.Namespace, split: str | None = None, dataset: str | None = None) -> Any:  # gym.Env
    """An env in this process, with the embedded retriever: it lists the questions and plays the oracle for the warm
    start and the held-out evaluation (RLlib's env runners build their own, with ``--retriever-url`` if given)."""
    import gymnasium as gym

    import research_env  # noqa: F401  (registers the env ids)

    kwargs = env_kwargs(args, split, dataset)
    kwargs.pop("retriever_url", None)
    return gym.make(args.env, **kwargs)


def question_ids(args: argparse.Namespace, split: str | None = None) -> list[str]:
    """The ids of a split's questions (the training split by default), in file order."""
    env = local_env(args, split=split)
    try:
        return list(env.unwrapped.dataset.ids)
    finally:
        env.close()


def warm_start(args: argparse.Namespace, output: Path, train_ids: list[str]) -> str | None:
    """Build (or reuse) DIR/policy when --small-vocab or --sft-warmstart asks for it; its path, else None.

    SFT imitates the ``--sft-split`` questions where the env has splits, else the first training questions."""
    if not (args.small_vocab or args.sft_warmstart):
        return None
    from agents.generation.rollout import RolloutConfig
    from agents.policies.warmstart import WarmStart, prepare_policy
    from agents.training.sft import SFTConfig

    sft_ids = question_ids(args, args.sft_split) if args.sft_split not in (None, args.split) else train_ids
    n_sft = args.sft_questions or (args.questions if sft_ids is train_ids else 0) or len(sft_ids)
    settings = args.settings
    sft = (
        SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=args.sft_batch_size, seed=settings.seed)
        if args.sft_warmstart
        else None
    )
    spec = WarmStart(
        question_ids=sft_ids[:n_sft],
        model=args.model,
        small_vocab=args.small_vocab,
        sft=sft,
        noisy_copies=args.noisy_copies,
        no_search_share=args.no_search_share if sft else 0.0,
        split_names=args.split_names,
        seed=settings.seed,
        # an oracle trace takes as many chunks as it has hops: no turn cap here
        rollout=RolloutConfig(max_new_tokens=settings.max_new_tokens, max_tokens=settings.max_tokens),
    )
    print(
        f"warm start: building {output / 'policy'} (small vocabulary: {args.small_vocab}, SFT on "
        f"{len(spec.question_ids)} questions: {args.sft_warmstart}) ...",
        flush=True,
    )
    return str(prepare_policy(output / "policy", lambda: local_env(args, split=args.sft_split), spec))


def held_out_evaluation(args: argparse.Namespace) -> Any:  # HeldOutEval | None
    """The greedy evaluation of ``--eval-every`` on the first ``--eval-questions`` held-out questions, or None."""
    if not args.eval_every:
        return None
    from agents.training.heldout import HeldOutEval

    def make_env() -> Any:
        return local_env(args, split=args.eval_split, dataset=args.eval_dataset)

    env = make_env()
    ids = env.unwrapped.dataset.ids[: args.eval_questions]
    env.close()
    return HeldOutEval(make_env, ids, args.settings.rollout_config(), temperature=0.0, seed=args.settings.seed)


def eval_line(row: dict[str, float], total: int, questions: int) -> str:
    """The progress line of the evaluation before the first iteration (the baseline of every later one)."""
    return (
        f"iter {int(row['iteration']):>4}/{total} | eval reward {row['eval/reward']:.3f} ± "
        f"{row['eval/reward_se']:.3f} searches {row['eval/searches_per_episode']:.2f} (greedy, {questions} "
        "held-out questions)"
    )
