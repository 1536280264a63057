"""Learning proof (issue #6), through the RLlib trainer itself: seeded CPU runs in which GRPO raises the
reward measured by a separate evaluation on the questions it trains on.

Per seed: a 1.4M-parameter Qwen2 with an 8,192-token BPE trained on the training questions' oracle traces
(``agents.policies.small_vocab``); SFT warm start on clean and noisy oracle traces of 80 MuSiQue training questions
(``agents.policies.warmstart``); GRPO on RLlib (``agents.training.rllib``) on a fixed set of 16 of them, 16 x 5
rollouts per iteration; a separate evaluation (its own sampler seed, the same before and after) on those 16 questions
and on the 20 held-out ones, before and after GRPO.

    python benchmarks/learning.py                         # 3 seeds, the issue's settings
    python benchmarks/learning.py --seeds 0 --iterations 10   # one quicker seed
    python benchmarks/learning.py --quick --json out.json     # the same, into a temporary directory (run.py)
    python benchmarks/learning.py --task synthetic            # learned search, with its ablation (issue #11)

What it shows, honestly: the tiny model memorises the training questions' answers during SFT; GRPO makes
producing them reliable at temperature 1 (fewer derailed queries and broken tags). Held-out questions can
gain format validity, not answers: this is not learned search, and the benchmark does not claim it is.
Writes DIR/seed<N>/ (metrics.jsonl, tb/, curves.png, policy/) and DIR/learning.json; prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import research_env  # noqa: F401  (registers the env ids)
from agents.generation.rollout import RolloutConfig, token_env
from agents.policies.models import load_causal_lm
from agents.policies.warmstart import WarmStart, prepare_policy
from agents.training.settings import DEFAULT_ENV_ID
from agents.training.sft import SFTConfig
from agents.training.torch_loop import evaluate_policy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import add_contract_arguments, write_result  # noqa: E402

#: ``--quick``: one seed, a third of the GRPO iterations (the SFT warm start, most of the time, stays whole: without
#: it there is nothing for GRPO to sharpen).
QUICK_SEEDS, QUICK_ITERATIONS = [0], 10


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (--quick: 0)")
    p.add_argument("--top-k", type=int, default=1, help="BM25 passages per search (the issue used 3; 1 is 3x faster)")
    p.add_argument("--train-questions", type=int, default=80, help="the first N of the 100 are training questions")
    p.add_argument("--grpo-questions", type=int, default=16, help="GRPO trains on the first N training questions")
    p.add_argument("--sft-epochs", type=int, default=20)
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--sft-batch-size", type=int, default=4)
    p.add_argument("--noisy-copies", type=int, default=1, help="noisy copies of each oracle trace (0: clean only)")
    p.add_argument("--iterations", type=int, help=f"GRPO iterations: default 30 (--quick: {QUICK_ITERATIONS})")
    p.add_argument("--group-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-iterations", type=int, default=2)
    p.add_argument("--minibatches", type=int, default=2, help="optimizer steps per iteration")
    p.add_argument("--algorithm", default="grpo")
    p.add_argument("--eval-samples", type=int, default=10, help="samples per GRPO question in each evaluation")
    p.add_argument("--heldout-samples", type=int, default=5, help="samples per held-out question")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--max-tokens", type=int, default=3072)
    p.add_argument("--max-turns", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="default benchmarks/results/learning (--quick: a temporary directory)")
    add_contract_arguments(p)
    args = p.parse_args()
    args.seeds = args.seeds or (QUICK_SEEDS if args.quick else [0, 1, 2])
    args.iterations = args.iterations or (QUICK_ITERATIONS if args.quick else 30)
    # a quick run must not overwrite the committed results of the full one
    args.out = args.out or (
        Path(tempfile.mkdtemp(prefix="learning_quick_")) if args.quick else ROOT / "benchmarks" / "results" / "learning"
    )
    return args


def grpo_config(args: argparse.Namespace, policy: Path, question_ids: list[str], seed: int):  # -> GRPOConfig
    """The RLlib GRPOConfig of the run: the paper's loss (clip 0.2, k3 KL and entropy at 0.001, grad clip
    1.0) with the feasibility run's batch and step sizes."""
    from agents.training.rllib import GRPOConfig

    return (
        GRPOConfig()
        .environment(env_config={"top_k": args.top_k})
        .training(
            algorithm=args.algorithm,
            prompts_per_batch=len(question_ids),
            group_size=args.group_size,
            lr=args.lr,
            warmup_iterations=args.warmup_iterations,
            num_minibatches=args.minibatches,
            drop_zero_advantage=True,
            micro_batch_size=8,
            question_ids=question_ids,
        )
        .rollouts(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns)
        .policy(model=str(policy))
        .debugging(seed=seed)
    )


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from agents.training.reporting import TrainingLog, progress_line

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    out = args.out / f"seed{seed}"
    timings: dict[str, float] = {}

    def make_env() -> gym.Env:
        return gym.make(DEFAULT_ENV_ID, top_k=args.top_k)

    env = make_env()
    all_ids = env.unwrapped.dataset.ids
    env.close()
    train_ids, heldout_ids = all_ids[: args.train_questions], all_ids[args.train_questions :]
    grpo_ids = train_ids[: args.grpo_questions]
    rollout = RolloutConfig(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns)

    # 1. The starting policy: small vocabulary, SFT on clean + noisy oracle traces of the training questions.
    t = time.perf_counter()
    warm = WarmStart(
        question_ids=train_ids,
        small_vocab=True,
        noisy_copies=args.noisy_copies,
        seed=seed,
        sft=SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=args.sft_batch_size, seed=seed),
        rollout=rollout,
    )
    policy = prepare_policy(out / "policy", make_env, warm)
    timings["warm_start_s"] = time.perf_counter() - t
    model, tokenizer = load_causal_lm(policy, device="cpu", dtype=torch.float32)
    n_envs = max(len(grpo_ids) * args.eval_samples, len(heldout_ids) * args.heldout_samples)
    envs = [token_env(make_env(), tokenizer, rollout) for _ in range(n_envs)]

    def evaluate(tag: str, lm: torch.nn.Module) -> dict[str, dict[str, float]]:
        t = time.perf_counter()
        result = {
            "train": evaluate_policy(
                lm, tokenizer, envs, grpo_ids, args.eval_samples, rollout, seed=10_000 + seed
            ).summary(),
            "heldout": evaluate_policy(
                lm, tokenizer, envs, heldout_ids, args.heldout_samples, rollout, seed=20_000 + seed
            ).summary(),
        }
        timings[f"eval_{tag}_s"] = time.perf_counter() - t
        print(
            f"seed {seed} eval {tag}: GRPO questions reward {result['train']['reward']:.3f} ± "
            f"{result['train']['reward_se']:.3f}, format {result['train']['format_ok']:.3f}; held-out reward "
            f"{result['heldout']['reward']:.3f}, format {result['heldout']['format_ok']:.3f}",
            flush=True,
        )
        return result

    # 2. Separate evaluation before GRPO (fixed sampler seed: the same random numbers before and after).
    before = evaluate("before", model)

    # 3. GRPO through RLlib: Algorithm.train() per iteration, learner and env runner in this process.
    log = TrainingLog(out)
    log.truncate(0)
    algo = grpo_config(args, policy, grpo_ids, seed).build_algo()
    t = time.perf_counter()
    try:
        for _ in range(args.iterations):
            result = algo.train()
            print(f"seed {seed} " + progress_line(log.write(algo.iteration, result), args.iterations), flush=True)
        log.plot()
        timings["grpo_s"] = time.perf_counter() - t
        # The local env runner's module holds the learner's weights: they are synced after every update.
        trained = algo.env_runner.module.model
        # 4. Separate evaluation after GRPO.
        after = evaluate("after", trained)
    finally:
        log.close()
        algo.stop()
        for e in envs:
            e.close()
    return {
        "seed": seed,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "before": before,
        "after": after,
        "history": log.history(),
        "timings": timings,
    }


def print_table(runs: list[dict[str, Any]]) -> None:
    rows = [
        ("GRPO questions: reward", "train", "reward"),
        ("GRPO questions: F1", "train", "f1"),
        ("GRPO questions: format-valid", "train", "format_ok"),
        ("held-out: reward", "heldout", "reward"),
        ("held-out: format-valid", "heldout", "format_ok"),
    ]
    print(f"\n{'seed':>4s} {'metric':30s} {'n':>5s} {'before':>15s} {'after':>15s} {'change':>8s}")
    for run in runs:
        b, a = run["before"], run["after"]
        for name, split, key in rows:
            print(
                f"{run['seed']:4d} {name:30s} {b[split]['n']:5d} {b[split][key]:7.3f} ± {b[split][key + '_se']:.3f} "
                f"{a[split][key]:7.3f} ± {a[split][key + '_se']:.3f} {a[split][key] - b[split][key]:+8.3f}"
            )
    if len(runs) > 1:
        print(f"\nover {len(runs)} seeds (mean of the per-seed changes ± its standard error):")
        for name, split, key in rows:
            changes = [r["after"][split][key] - r["before"][split][key] for r in runs]
            se = float(np.std(changes, ddof=1) / math.sqrt(len(changes)))
            print(f"     {name:30s} {float(np.mean(changes)):+.3f} ± {se:.3f}")
    minutes = sum(sum(r["timings"].values()) for r in runs) / 60
    print(
        f"wall time {minutes:.1f} min: "
        + "; ".join(f"seed {r['seed']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items()) for r in runs)
    )


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = learning_figure(runs)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def learning_figure(runs: list[dict[str, Any]]):  # -> matplotlib.figure.Figure
    """Training reward per seed, and the separate evaluations before and after GRPO: one pair of bars per seed
    in each group, each pair labelled with its seed (the legend only tells before from after)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for run in runs:
        its = [h["iteration"] for h in run["history"]]
        axes[0].plot(its, [h["charts/episodic_return"] for h in run["history"]], label=f"seed {run['seed']}")
    axes[0].set(xlabel="GRPO iteration (RLlib)", ylabel="reward", title="training rollouts (16 x 5 per iteration)")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend()
    names = ["GRPO questions:\nreward", "GRPO questions:\nformat-valid", "held-out:\nreward", "held-out:\nformat-valid"]
    keys = [("train", "reward"), ("train", "format_ok"), ("heldout", "reward"), ("heldout", "format_ok")]
    x = np.arange(len(names))
    width = 0.8 / (2 * len(runs))
    for i, run in enumerate(runs):
        for j, (tag, color) in enumerate((("before", "tab:gray"), ("after", "tab:blue"))):
            values = [run[tag][s][k] for s, k in keys]
            errors = [run[tag][s][k + "_se"] for s, k in keys]
            bars = axes[1].bar(
                x - 0.4 + width * (2 * i + j + 0.5),
                values,
                width,
                yerr=errors,
                color=color,
                capsize=2,
                label=f"{tag} GRPO" if i == 0 else None,
            )
            if tag == "after":  # the seed, once per pair, above the taller error bar
                axes[1].bar_label(bars, labels=[f"s{run['seed']}"] * len(names), fontsize="x-small", padding=6)
    axes[1].set_xticks(x, names)
    axes[1].set(
        title=f"separate evaluation, seeds {[r['seed'] for r in runs]} (± s.e.; bar pairs s<seed>)", ylim=(0, 1.1)
    )
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: the seed labels reach the top
    fig.tight_layout()
    return fig


def run_seeds(args: argparse.Namespace, run_seed: Any, plot: Any, stem: str) -> list[dict[str, Any]]:
    """Every seed of ``args.seeds`` on one Ray instance; ``DIR/<stem>.json`` and ``.png`` rewritten after each, so an
    interrupted benchmark keeps the seeds it finished. Shared with ``learning_synthetic.py``."""
    from agents.training.rllib.cluster import init_ray

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    init_ray(num_cpus=args.threads)
    import ray

    runs = []
    try:
        for seed in args.seeds:
            runs.append(run_seed(args, seed))
            report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "runs": runs}
            (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
            plot(runs, args.out / f"{stem}.png")
    finally:
        ray.shutdown()
    return runs


def ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """After / before GRPO, averaged over seeds, for the figures the benchmark is about; a figure that was 0 before
    in some seed has no ratio (held-out reward usually is) and is left out rather than made infinite."""
    out = {}
    for name, split, key in (
        ("GRPO questions: reward", "train", "reward"),
        ("GRPO questions: format-valid", "train", "format_ok"),
        ("held-out: format-valid", "heldout", "format_ok"),
    ):
        if all(r["before"][split][key] > 0 for r in runs):
            out[f"{name}, after / before"] = float(
                np.mean([r["after"][split][key] / r["before"][split][key] for r in runs])
            )
    return out


def main() -> None:
    args = parse_args()
    runs = run_seeds(args, run_seed, plot, "learning")
    print_table(runs)
    write_result(
        args.json, "learning", ratios(runs), [{k: r[k] for k in ("seed", "before", "after", "timings")} for r in runs]
    )


if __name__ == "__main__":
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", choices=("musique", "synthetic"), default="musique")
    chosen, rest = task.parse_known_args()
    if chosen.task == "synthetic":  # learned search on a synthetic world: benchmarks/learning_synthetic.py
        from learning_synthetic import main as synthetic_main

        synthetic_main(rest)
    else:
        sys.argv[1:] = rest
        main()
