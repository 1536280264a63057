"""GRPO on the ReSearch envs in plain PyTorch, without RLlib: the example of driving the same envs, rollout
engine, advantages and loss from your own loop. Zero arguments: two quick iterations of the tiny default model.

    python scripts/train_grpo_torch.py                                  # tiny Qwen2 (Qwen2.5 vocabulary), CPU
    python scripts/train_grpo_torch.py --algorithm rloo                 # any of agents.training.algorithms.ALGORITHMS
    python scripts/train_grpo_torch.py --small-vocab --sft-warmstart --iterations 20 --lr 3e-4 --warmup-steps 4
    python scripts/train_grpo_torch.py --model /path/to/Qwen2.5-7B --prompts 64 --lr 1e-6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import torch

import research_env  # noqa: F401  (registers the env ids)
from agents.training.algorithms import ALGORITHMS
from agents.policies.models import load_causal_lm
from agents.generation.rollout import token_env
from agents.training.sft import SFTConfig, build_sft_dataset, sft_train
from agents.policies.small_vocab import oracle_trace_texts, small_qwen2, train_small_tokenizer
from agents.training.torch_loop import TorchGRPO, TorchGRPOConfig


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="ReSearch-MuSiQue-v0")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--questions", type=int, default=80, help="train on the first N questions of the dataset")
    p.add_argument("--model", default=None, help="local HF checkpoint (default: the tiny Qwen2)")
    p.add_argument("--small-vocab", action="store_true",
                   help="a fresh 1.4M-parameter Qwen2 over an 8,192-token BPE trained on the training questions")
    p.add_argument("--sft-warmstart", action="store_true", help="SFT on oracle traces (+ noisy copies) first")
    p.add_argument("--sft-epochs", type=int, default=20)
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--sft-batch-size", type=int, default=4)
    p.add_argument("--noisy-copies", type=int, default=1)
    p.add_argument("--algorithm", default="grpo", choices=sorted(ALGORITHMS))
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--prompts", type=int, default=2, help="prompts per iteration")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--minibatches", type=int, default=2)
    p.add_argument("--clip-ratio", type=float, default=0.2)
    p.add_argument("--kl-coef", type=float, default=0.001)
    p.add_argument("--entropy-coef", type=float, default=0.001)
    p.add_argument("--keep-zero-advantage", action="store_true", help="train on groups whose rewards are all equal")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--max-turns", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write metrics.jsonl here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)

    # config
    config = TorchGRPOConfig(
        algorithm=args.algorithm, group_size=args.group_size, prompts_per_iteration=args.prompts, lr=args.lr,
        warmup_steps=args.warmup_steps, clip_ratio=args.clip_ratio, kl_coef=args.kl_coef,
        entropy_coef=args.entropy_coef, minibatches=args.minibatches, drop_zero_advantage=not args.keep_zero_advantage,
        max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns, seed=args.seed)
    text_env = gym.make(args.env_id, top_k=args.top_k)
    dataset = text_env.unwrapped.dataset
    question_ids = dataset.ids[: max(args.questions, 0)]

    # policy: a checkpoint, or a fresh small-vocabulary model for CPU learning runs
    if args.small_vocab:
        tokenizer = train_small_tokenizer(oracle_trace_texts(text_env, question_ids))
        model = small_qwen2(tokenizer, seed=args.seed)
    else:
        model, tokenizer = load_causal_lm(args.model)
    envs = [token_env(gym.make(args.env_id, top_k=args.top_k), tokenizer, config.rollout_config())
            for _ in range(args.prompts * args.group_size)]
    print(f"{args.algorithm} on {len(question_ids)} questions of {args.env_id}: "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(tokenizer):,}")

    # optional SFT warm start: a random policy never writes a valid format, so GRPO would get no signal
    if args.sft_warmstart:
        examples = build_sft_dataset(envs[0], question_ids, noisy_copies=args.noisy_copies, seed=args.seed)
        sft = SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=args.sft_batch_size, seed=args.seed)
        sft_train(model, examples, sft, tokenizer.pad_token_id)

    # the loop: rollout groups -> advantages -> clipped-loss update -> log (see TorchGRPO.iteration)
    trainer = TorchGRPO.create(model, tokenizer, envs, question_ids, config)
    log = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        log = (args.out / "metrics.jsonl").open("w")
    started = time.perf_counter()
    for _ in range(args.iterations):
        m = trainer.iteration()
        print(f"iter {int(m['iteration'])}: reward {m['charts/reward']:.3f} f1 {m['charts/f1']:.3f} "
              f"format {m['charts/format_ok']:.2f} searches {m['charts/searches']:.2f} "
              f"resp_tok {m['charts/response_tokens']:.0f} kl {m.get('losses/kl', 0.0):.4f} "
              f"entropy {m.get('losses/entropy', 0.0):.3f} clipfrac {m.get('losses/clipfrac', 0.0):.3f} "
              f"kept {int(m['charts/kept_trajectories'])} {m['charts/tokens_per_s']:.0f} tok/s "
              f"(gen {m['time/generate_s']:.1f}s env {m['time/env_s']:.1f}s learn {m['time/learner_s']:.1f}s)",
              flush=True)
        if log:
            log.write(json.dumps(m) + "\n")
            log.flush()
    print(f"done: {args.iterations} iterations in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
