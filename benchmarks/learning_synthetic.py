"""Learning proof of learned search (issue #11), through the RLlib trainer: on a synthetic world whose answers
only the corpus holds, GRPO raises the held-out reward by making the policy search, and the same GRPO with
retrieval returning no passages does not. Run through ``python benchmarks/learning.py --task synthetic``.

Per seed, a world of its own (``ReSearch-Synthetic-v0``, seed = the run's seed, ``agents.training.recipe``: 1-hop
questions, 4,000 per split, train/dev/test over disjoint entities, a one-line prompt):

1. Warm start (``agents.policies.warmstart``): a ~0.5M-parameter Qwen2 over a small BPE trained on the train
   split's oracle traces with names spelled out as syllables; SFT (8 epochs) on the train split's traces, of which
   half search and answer and half answer at once with a wrong guess of the same type. Greedy decoding then
   answers at once: the warm start does not solve the task, it only knows both moves.
2. GRPO on RLlib on the dev split (entities unseen in SFT), 16 questions x 5 rollouts per iteration, BM25
   top-1; and, from the same warm start, the ablation: the same GRPO with a retriever that returns no passages.
3. Separate evaluations on 200 test-split questions (entities seen neither in SFT nor in GRPO), greedy and
   sampled at temperature 1 with a fixed sampler seed, before GRPO and after each arm.

Writes DIR/seed<N>/{policy,grpo,no_passages}/ and DIR/learning_synthetic.{json,png}; prints a table.
``--quick`` (what ``benchmarks/run.py --only learning_synthetic`` runs): seed 0 only, into a temporary directory.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import research_env  # noqa: F401  (registers the env ids)
from agents.generation.rollout import RolloutConfig
from agents.policies.models import load_causal_lm
from agents.policies.warmstart import WarmStart, prepare_policy
from agents.training.heldout import HeldOutEval
from agents.training.recipe import SYNTHETIC_WORLD
from agents.training.sft import SFTConfig
from research_env.registration import SYNTHETIC_ENV_ID
from research_env.retrieval import Document

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import add_contract_arguments, write_result  # noqa: E402

EVALS = ("greedy", "sampled")
ARMS = ("grpo", "no_passages")
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "learning_synthetic"


class NoPassages:
    """The ablation's retriever: every search returns no passages, so searching can never pay off."""

    identity = "no-passages"

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        return [[] for _ in queries]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (--quick: 0)")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--eval-questions", type=int, default=200, help="held-out test questions per evaluation")
    p.add_argument("--no-search-share", type=float, default=0.5, help="SFT traces that answer without searching")
    p.add_argument("--sft-epochs", type=int, default=8)
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--sft-batch-size", type=int, default=8)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-iterations", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=2)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--skip-ablation", action="store_true", help="train the main arm only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="default benchmarks/results/learning_synthetic (--quick: a temporary one)")
    add_contract_arguments(p)
    args = p.parse_args(argv)
    # One seed is the quick mode: GRPO itself takes under a minute, the warm start most of the time, and neither
    # can be cut without losing what is measured. A quick run must not overwrite the committed full results.
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="learning_synthetic_quick_")) if args.quick else DEFAULT_OUT
    return args


def ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Sampled held-out reward, averaged over seeds: after GRPO over before, and over the no-passages ablation (the
    claim is that search, not GRPO alone, raises it)."""
    arms = ("before", *(arm for arm in ARMS if arm in runs[0]))  # no "no_passages" with --skip-ablation
    reward = {arm: float(np.mean([r[arm]["sampled"]["eval/reward"] for r in runs])) for arm in arms}
    out = {}
    if reward["before"] > 0:
        out["sampled reward: after GRPO / before"] = reward["grpo"] / reward["before"]
    if reward.get("no_passages", 0) > 0:
        out["sampled reward: after GRPO / after GRPO without passages"] = reward["grpo"] / reward["no_passages"]
    return out


def grpo_config(args: argparse.Namespace, policy: Path, env_config: dict[str, Any], seed: int):  # -> GRPOConfig
    from agents.training.rllib import GRPOConfig

    return (
        GRPOConfig()
        .environment(env=SYNTHETIC_ENV_ID, env_config=env_config)
        .training(
            prompts_per_batch=args.prompts,
            group_size=args.group_size,
            lr=args.lr,
            warmup_iterations=args.warmup_iterations,
            num_minibatches=args.minibatches,
            drop_zero_advantage=True,
            micro_batch_size=16,
        )
        .rollouts(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns)
        .policy(model=str(policy))
        .debugging(seed=seed)
    )


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from agents.training.reporting import TrainingLog, progress_line

    torch.manual_seed(seed)
    out = args.out / f"seed{seed}"
    world = {**SYNTHETIC_WORLD, "seed": seed, "top_k": args.top_k}
    rollout = RolloutConfig(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns)

    def make_env(split: str, **extra: Any) -> gym.Env:
        return gym.make(SYNTHETIC_ENV_ID, split=split, **world, **extra)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    train_ids = make_env("train").unwrapped.dataset.ids
    test_ids = make_env("test").unwrapped.dataset.ids[: args.eval_questions]
    warm = WarmStart(
        question_ids=train_ids,
        small_vocab=True,
        split_names=True,
        noisy_copies=0,
        no_search_share=args.no_search_share,
        seed=seed,
        rollout=rollout,
        sft=SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=args.sft_batch_size, seed=seed),
    )
    policy = prepare_policy(out / "policy", lambda: make_env("train"), warm)
    timings["warm_start_s"] = time.perf_counter() - t
    model, tokenizer = load_causal_lm(policy, device="cpu", dtype=torch.float32)
    evaluations = {
        "greedy": HeldOutEval(lambda: make_env("test"), test_ids, rollout, temperature=0.0, seed=20_000 + seed),
        "sampled": HeldOutEval(lambda: make_env("test"), test_ids, rollout, temperature=1.0, seed=30_000 + seed),
    }

    def evaluate(tag: str, lm: torch.nn.Module) -> dict[str, dict[str, float]]:
        t = time.perf_counter()
        result = {name: evaluation(lm, tokenizer) for name, evaluation in evaluations.items()}
        timings[f"eval_{tag}_s"] = time.perf_counter() - t
        print(
            f"seed {seed} eval {tag}: "
            + "; ".join(
                f"{name} reward {r['eval/reward']:.3f} ± {r['eval/reward_se']:.3f}, searches "
                f"{r['eval/searches_per_episode']:.2f}"
                for name, r in result.items()
            ),
            flush=True,
        )
        return result

    run: dict[str, Any] = {
        "seed": seed,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "before": evaluate("before", model),
    }
    arms = {"grpo": {"split": "dev"}, "no_passages": {"split": "dev", "retriever": NoPassages()}}
    for arm in ARMS[:1] if args.skip_ablation else ARMS:
        log = TrainingLog(out / arm)
        log.truncate(0)
        algo = grpo_config(args, policy, {**world, **arms[arm]}, seed).build_algo()
        t = time.perf_counter()
        try:
            for _ in range(args.iterations):
                result = algo.train()  # before reading algo.iteration, which train() advances
                row = log.write(algo.iteration, result)
                print(f"seed {seed} {arm} " + progress_line(row, args.iterations), flush=True)
            log.plot()
            timings[f"{arm}_s"] = time.perf_counter() - t
            # the local env runner's module holds the learner's weights: they are synced after every update
            run[arm] = evaluate(arm, algo.env_runner.module.model)
            run[f"{arm}_history"] = log.history()
        finally:
            log.close()
            algo.stop()
    for evaluation in evaluations.values():
        evaluation.close()
    run["timings"] = timings
    return run


def _mean_se(values: list[float]) -> tuple[float, float]:
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(np.mean(values)), se


def print_table(runs: list[dict[str, Any]]) -> str:
    """The README table: per seed and evaluation, before → after each arm; then the mean change ± s.e."""
    arms = [arm for arm in ARMS if arm in runs[0]]
    lines = [
        "| seed | evaluation (200 held-out) | reward before | searches before | "
        + " | ".join(f"reward after {a} | searches after {a}" for a in arms)
        + " |",
        "|---|---|---|---|" + "---|---|" * len(arms),
    ]
    for run in runs:
        for name in EVALS:
            b = run["before"][name]
            cells = [f"{b['eval/reward']:.3f} ± {b['eval/reward_se']:.3f}", f"{b['eval/searches_per_episode']:.2f}"]
            for arm in arms:
                a = run[arm][name]
                cells += [
                    f"{a['eval/reward']:.3f} ± {a['eval/reward_se']:.3f}",
                    f"{a['eval/searches_per_episode']:.2f}",
                ]
            lines.append(f"| {run['seed']} | {name} | " + " | ".join(cells) + " |")
    for name in EVALS:
        cells = []
        for arm in arms:
            for key in ("eval/reward", "eval/searches_per_episode"):
                mean, se = _mean_se([r[arm][name][key] - r["before"][name][key] for r in runs])
                cells.append(f"**{mean:+.3f} ± {se:.3f}**")
        lines.append(f"| mean change over {len(runs)} seeds (± s.e.) | {name} | | | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    minutes = sum(sum(r["timings"].values()) for r in runs) / 60
    print(
        f"wall time {minutes:.1f} min: "
        + "; ".join(f"seed {r['seed']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items()) for r in runs)
    )
    return table


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [arm for arm in ARMS if f"{arm}_history" in runs[0]]
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.5))
    for run in runs:
        for arm, style in zip(arms, ("-", ":"), strict=False):
            history = run[f"{arm}_history"]
            its = [h["iteration"] for h in history]
            label = f"seed {run['seed']} {arm}"
            axes[0].plot(its, [h["charts/searches_per_episode"] for h in history], style, label=label)
            axes[1].plot(its, [h["charts/episodic_return"] for h in history], style, label=label)
    axes[0].set(xlabel="GRPO iteration (RLlib)", ylabel="searches / episode", title="training rollouts: searches")
    axes[1].set(xlabel="GRPO iteration (RLlib)", ylabel="reward", title="training rollouts: reward")
    axes[0].legend(fontsize="small")
    labels = ["before"] + [f"after {arm}" for arm in arms]
    x = np.arange(len(EVALS))
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        key = "before" if j == 0 else arms[j - 1]
        means = [np.mean([r[key][name]["eval/reward"] for r in runs]) for name in EVALS]
        errors = [_mean_se([r[key][name]["eval/reward"] for r in runs])[1] for name in EVALS]
        axes[2].bar(x - 0.4 + width * (j + 0.5), means, width, yerr=np.nan_to_num(errors), capsize=3, label=label)
    axes[2].set_xticks(x, [f"held-out {name}" for name in EVALS])
    axes[2].set(ylabel="reward (mean over seeds ± s.e.)", title="separate evaluation on unseen entities", ylim=(0, 1))
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from learning import run_seeds  # the seed loop of benchmarks/learning.py, which dispatches here

    args = parse_args(argv)
    runs = run_seeds(args, run_seed, plot, "learning_synthetic")
    print_table(runs)
    keep = ("seed", "timings", "before", *ARMS)
    write_result(args.json, "learning_synthetic", ratios(runs), [{k: r[k] for k in keep if k in r} for r in runs])
