"""Learning proof (issue #6): a seeded CPU run in which GRPO raises the evaluated reward on the questions it
trains on. SFT warm start on oracle traces (clean + noisy copies) of 80 MuSiQue training questions, then GRPO
on a fixed set of 16 of them; reward and format validity are measured by a separate evaluation before and after.

    python benchmarks/learning.py                      # the issue's settings (~20+ min on 2 busy cores)
    python benchmarks/learning.py --top-k 1 --sft-epochs 8 --iterations 20   # what fits a shared CPU box

What it shows, honestly: the tiny model (1.4M parameters) memorises the training questions' answers during
SFT; GRPO makes producing them reliable at temperature 1 (fewer derailed queries and broken tags). Held-out
questions gain format validity at most, not answers: this is not learned search.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import research_env  # noqa: F401  (registers the env ids)
from agents.rollout import RolloutConfig, token_env
from agents.sft import SFTConfig, build_sft_dataset, sft_train
from agents.small_vocab import oracle_trace_texts, small_qwen2, train_small_tokenizer
from agents.torch_loop import TorchGRPO, TorchGRPOConfig, evaluate_policy

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=3, help="BM25 passages per search (the issue used 3)")
    p.add_argument("--train-questions", type=int, default=80, help="the first N of the 100 are training questions")
    p.add_argument("--grpo-questions", type=int, default=16, help="GRPO trains on the first N training questions")
    p.add_argument("--sft-epochs", type=int, default=20)
    p.add_argument("--sft-lr", type=float, default=5e-3)
    p.add_argument("--sft-batch-size", type=int, default=16)
    p.add_argument("--noisy-copies", type=int, default=1, help="noisy copies of each oracle trace (0: clean only)")
    p.add_argument("--iterations", type=int, default=42)
    p.add_argument("--group-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=4)
    p.add_argument("--algorithm", default="grpo")
    p.add_argument("--eval-samples", type=int, default=10, help="samples per GRPO question in each evaluation")
    p.add_argument("--heldout-samples", type=int, default=5, help="samples per held-out question")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--max-tokens", type=int, default=3072)
    p.add_argument("--max-turns", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def make_env() -> gym.Env:
        return gym.make("ReSearch-MuSiQue-v0", top_k=args.top_k)

    # Data: a fixed split of the shipped 100-question MuSiQue sample.
    text_env = make_env()
    dataset = text_env.unwrapped.dataset
    all_ids = [dataset[i].id for i in range(len(dataset))]
    train_ids, heldout_ids = all_ids[: args.train_questions], all_ids[args.train_questions :]
    grpo_ids = train_ids[: args.grpo_questions]

    # Small vocabulary from the training questions' oracle traces only, and a fresh 1.4M-parameter model.
    tokenizer = train_small_tokenizer(oracle_trace_texts(text_env, train_ids))
    model = small_qwen2(tokenizer, seed=args.seed)
    rollout = RolloutConfig(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns)
    n_envs = max(args.grpo_questions * max(args.group_size, args.eval_samples), len(heldout_ids) * args.heldout_samples)
    envs = [token_env(make_env(), tokenizer, rollout) for _ in range(n_envs)]
    print(f"vocab {len(tokenizer)}, model {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(train_ids)} train / {len(heldout_ids)} held-out questions, GRPO on {len(grpo_ids)}")

    # 1. SFT warm start: clean oracle traces plus noisy copies (corrupted queries, masked out of the loss).
    t = time.perf_counter()
    examples = build_sft_dataset(envs[0], train_ids, noisy_copies=args.noisy_copies, seed=args.seed)
    sft_losses = sft_train(model, examples, SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr,
                                                    batch_size=args.sft_batch_size, seed=args.seed),
                           tokenizer.pad_token_id)
    timings["sft_s"] = time.perf_counter() - t

    def evaluate(tag: str) -> dict[str, dict[str, float]]:
        t = time.perf_counter()
        result = {
            "train": evaluate_policy(model, tokenizer, envs, grpo_ids, args.eval_samples, rollout,
                                     seed=10_000 + args.seed).summary(),
            "heldout": evaluate_policy(model, tokenizer, envs, heldout_ids, args.heldout_samples, rollout,
                                       seed=20_000 + args.seed).summary(),
        }
        timings[f"eval_{tag}_s"] = time.perf_counter() - t
        print(f"eval {tag}: train reward {result['train']['reward']:.3f} ± {result['train']['reward_se']:.3f}, "
              f"format {result['train']['format_ok']:.3f}; held-out format {result['heldout']['format_ok']:.3f}")
        return result

    # 2. Separate evaluation before GRPO (fixed sampler seed: the same random numbers before and after).
    before = evaluate("before")

    # 3. GRPO on the fixed 16 questions.
    config = TorchGRPOConfig(algorithm=args.algorithm, group_size=args.group_size,
                             prompts_per_iteration=len(grpo_ids), lr=args.lr, warmup_steps=args.warmup_steps,
                             minibatches=2, drop_zero_advantage=True, max_new_tokens=args.max_new_tokens,
                             max_tokens=args.max_tokens, max_turns=args.max_turns, seed=args.seed)
    trainer = TorchGRPO.create(model, tokenizer, envs, grpo_ids, config)
    t = time.perf_counter()
    for _ in range(args.iterations):
        m = trainer.iteration()
        print(f"iter {int(m['iteration']):3d} reward {m['charts/reward']:.3f} format {m['charts/format_ok']:.2f} "
              f"searches {m['charts/searches']:.2f} resp_tok {m['charts/response_tokens']:.0f} "
              f"kept {int(m['charts/kept_trajectories'])} kl {m.get('losses/kl', 0):.4f} "
              f"clipfrac {m.get('losses/clipfrac', 0):.3f} ent {m.get('losses/entropy', 0):.2f} "
              f"{m['charts/tokens_per_s']:.0f} tok/s {m['time/iteration_s']:.1f}s", flush=True)
    timings["grpo_s"] = time.perf_counter() - t

    # 4. Separate evaluation after GRPO.
    after = evaluate("after")
    timings["total_s"] = time.perf_counter() - started

    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
              "sft_examples": len(examples), "sft_losses": sft_losses, "before": before, "after": after,
              "history": trainer.history, "timings": timings}
    (args.out / f"learning_seed{args.seed}.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / f"learning_seed{args.seed}.png")
    print_table(report)


def print_table(report: dict) -> None:
    b, a = report["before"], report["after"]
    rows = [("GRPO questions: reward", "train", "reward"), ("GRPO questions: format-valid", "train", "format_ok"),
            ("GRPO questions: F1", "train", "f1"), ("held-out: reward", "heldout", "reward"),
            ("held-out: format-valid", "heldout", "format_ok")]
    print(f"\n{'metric':32s} {'n':>5s} {'before':>16s} {'after':>16s}")
    for name, split, key in rows:
        print(f"{name:32s} {b[split]['n']:5d} {b[split][key]:8.3f} ± {b[split][key + '_se']:.3f} "
              f"{a[split][key]:8.3f} ± {a[split][key + '_se']:.3f}")
    print(f"wall time {report['timings']['total_s'] / 60:.1f} min: " +
          ", ".join(f"{k} {v:.0f}s" for k, v in report["timings"].items() if k != "total_s"))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = report["history"]
    its = [h["iteration"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key, label in (("charts/reward", "reward"), ("charts/format_ok", "format-valid")):
        axes[0].plot(its, [h[key] for h in history], label=f"training samples: {label}")
    axes[0].set(xlabel="GRPO iteration", title="training rollouts (16 x 5 per iteration)")
    axes[0].legend()
    axes[1].plot(its, [h.get("losses/kl", 0) for h in history], label="KL to reference")
    axes[1].plot(its, [h.get("losses/clipfrac", 0) for h in history], label="clip fraction")
    axes[1].set(xlabel="GRPO iteration", title="learner diagnostics")
    axes[1].legend()
    names = ["train reward", "train format", "held-out reward", "held-out format"]
    keys = [("train", "reward"), ("train", "format_ok"), ("heldout", "reward"), ("heldout", "format_ok")]
    x = np.arange(len(names))
    for offset, (tag, color) in ((-0.2, ("before", "tab:gray")), (0.2, ("after", "tab:blue"))):
        values = [report[tag][s][k] for s, k in keys]
        errors = [report[tag][s][k + "_se"] for s, k in keys]
        axes[2].bar(x + offset, values, 0.4, yerr=errors, label=f"{tag} GRPO", color=color, capsize=3)
    axes[2].set_xticks(x, names, rotation=15)
    axes[2].set(title="separate evaluation (± s.e.)", ylim=(0, 1))
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
