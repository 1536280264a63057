"""Train a ReSearch policy with GRPO (or RLOO, Dr. GRPO, REINFORCE++-baseline) on Ray RLlib.

With no arguments: the tiny default model, the shipped MuSiQue sample and the embedded BM25 index,
two small iterations on CPU in a few minutes. Writes DIR/checkpoints/, DIR/tb/, DIR/metrics.jsonl and
DIR/curves.png; ``--resume`` continues from the newest checkpoint in DIR.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

from agents.algorithms import ALGORITHMS

CHECKPOINT = re.compile(r"iter_(\d{6})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=2, help="train until this many iterations in total")
    p.add_argument("--output", default="runs/grpo_rllib", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--checkpoint-every", type=int, default=1, help="save every N iterations (and at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--model", default=None, help="local HF checkpoint directory (default: the tiny model)")
    p.add_argument("--algorithm", default="grpo", choices=sorted(ALGORITHMS))
    p.add_argument("--prompts", type=int, default=2, help="questions per train batch (paper: 256)")
    p.add_argument("--group-size", type=int, default=4, help="rollouts per question (paper: 5)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens per generation call")
    p.add_argument("--max-tokens", type=int, default=1024, help="context budget: prompt + response + results")
    p.add_argument("--max-turns", type=int, default=2, help="generation calls per episode (0: unlimited)")
    p.add_argument("--micro-batch-size", type=int, default=2, help="trajectories per forward/backward")
    p.add_argument("--num-learners", type=int, default=0, help="0: learn in this process; N > 1: DDP")
    p.add_argument("--num-gpus-per-learner", type=float, default=0)
    p.add_argument("--num-env-runners", type=int, default=0, help="0: sample in this process")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--retriever-url", default=None, help="a retrieval service instead of the embedded BM25")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):  # -> GRPOConfig
    from agents.grpo import GRPOConfig

    lora = ({"r": args.lora_rank, "lora_alpha": 2 * args.lora_rank, "target_modules": "all-linear",
             "lora_dropout": 0.0} if args.lora else None)
    env_config = {"retriever_url": args.retriever_url} if args.retriever_url else {}
    return (GRPOConfig()
            .environment(env_config=env_config)
            .training(algorithm=args.algorithm, prompts_per_batch=args.prompts, group_size=args.group_size,
                      lr=args.lr, micro_batch_size=args.micro_batch_size)
            .rollouts(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns or None)
            .policy(model=args.model, lora=lora)
            .learners(num_learners=args.num_learners, num_gpus_per_learner=args.num_gpus_per_learner)
            .env_runners(num_env_runners=args.num_env_runners)
            .debugging(seed=args.seed))


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(p for p in directory.glob("iter_*") if CHECKPOINT.fullmatch(p.name) and p.is_dir())
    return found[-1] if found else None


def save_checkpoint(algo, directory: Path, keep: int) -> Path:
    """Write to a hidden directory and rename it into place: a kill mid-save leaves the previous one intact."""
    final = directory / f"iter_{algo.iteration:06d}"
    staging = directory / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    algo.save_to_path(str(staging.resolve()))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in sorted(p for p in directory.glob("iter_*") if CHECKPOINT.fullmatch(p.name))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from agents.grpo.reporting import TrainingLog, progress_line

    output = Path(args.output)
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    if args.ray_address:
        ray.init(address=args.ray_address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False)
    log = TrainingLog(output)
    algo = build_config(args).build_algo()
    try:
        if args.resume and (checkpoint := latest_checkpoint(checkpoints)) is not None:
            algo.restore_from_path(str(checkpoint.resolve()))
            print(f"resumed from {checkpoint} at iteration {algo.iteration}", flush=True)
        elif args.resume:
            print(f"no checkpoint in {checkpoints}; starting from scratch", flush=True)
        log.truncate(algo.iteration)
        started = time.perf_counter()
        while algo.iteration < args.iterations:
            result = algo.train()
            row = log.write(algo.iteration, result)
            print(progress_line(row, args.iterations), flush=True)
            log.plot()
            if algo.iteration % args.checkpoint_every == 0 or algo.iteration == args.iterations:
                save_checkpoint(algo, checkpoints, args.keep_checkpoints)
        print(f"done: {algo.iteration} iterations ({time.perf_counter() - started:.0f}s this run); "
              f"{output}/curves.png, {output}/tb, {latest_checkpoint(checkpoints)}", flush=True)
    finally:
        log.close()
        algo.stop()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
