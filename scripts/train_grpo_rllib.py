"""Train a ReSearch policy with GRPO (or RLOO, Dr. GRPO, REINFORCE++-baseline) on Ray RLlib.

With no arguments: the tiny default model, the shipped MuSiQue sample and the embedded BM25 index,
two small iterations on CPU in a few minutes. Writes DIR/checkpoints/, DIR/tb/, DIR/metrics.jsonl and
DIR/curves.png; ``--resume`` continues from the newest checkpoint in DIR.

``--small-vocab`` and ``--sft-warmstart`` build the starting policy first (DIR/policy, reused on resume):
a random model gets no reward and so no GRPO signal; see benchmarks/learning.py for a run that learns.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

from agents.training.cli import env_kwargs, training_parser, validate_args
from agents.training.settings import GRPOSettings

CHECKPOINT = re.compile(r"iter_(\d{6})")


def build_parser() -> argparse.ArgumentParser:
    p = training_parser(__doc__, output="runs/grpo_rllib")
    rllib = p.add_argument_group("Ray RLlib")
    rllib.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    rllib.add_argument("--checkpoint-every", type=int, default=1, help="save every N iterations (and at the end)")
    rllib.add_argument("--keep-checkpoints", type=int, default=2)
    rllib.add_argument("--num-learners", type=int, default=0, help="0: learn in this process; N > 1: DDP")
    rllib.add_argument("--num-gpus-per-learner", type=float, default=0)
    rllib.add_argument("--num-env-runners", type=int, default=0, help="0: sample in this process")
    rllib.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    rllib.add_argument("--lora-rank", type=int, default=16)
    rllib.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    rllib.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.settings = validate_args(parser, args)
    for name in ("checkpoint_every", "keep_checkpoints"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def build_config(args: argparse.Namespace, model: str | None = None, question_ids: list[str] | None = None):
    """The GRPOConfig of these arguments (``model``: the warm-started policy, overriding ``--model``)."""
    from dataclasses import asdict

    from agents.training.rllib import GRPOConfig

    settings: GRPOSettings = args.settings
    lora = ({"r": args.lora_rank, "lora_alpha": 2 * args.lora_rank, "target_modules": "all-linear",
             "lora_dropout": 0.0} if args.lora else None)
    return (GRPOConfig()
            .environment(env=args.env, env_config=env_kwargs(args))
            .training(**{k: v for k, v in asdict(settings).items() if k != "seed"}, question_ids=question_ids)
            .policy(model=model or args.model, lora=lora)
            .learners(num_learners=args.num_learners, num_gpus_per_learner=args.num_gpus_per_learner)
            .env_runners(num_env_runners=args.num_env_runners)
            .debugging(seed=settings.seed))


def local_env(args: argparse.Namespace):  # -> gym.Env
    """The training env in this process, with the embedded retriever: it lists the questions and plays the
    oracle for the warm start (the env runners build their own, with ``--retriever-url`` if given)."""
    import gymnasium as gym

    import research_env  # noqa: F401  (registers the env ids)

    return gym.make(args.env, **{k: v for k, v in env_kwargs(args).items() if k != "retriever_url"})


def warm_start(args: argparse.Namespace, output: Path, all_ids: list[str]) -> str | None:
    """Build (or reuse) DIR/policy when --small-vocab or --sft-warmstart asks for it; its path, else None."""
    if not (args.small_vocab or args.sft_warmstart):
        return None
    from agents.generation.rollout import RolloutConfig
    from agents.policies.warmstart import WarmStart, prepare_policy
    from agents.training.sft import SFTConfig

    n_sft = args.sft_questions or args.questions or len(all_ids)
    sft = SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=args.sft_batch_size,
                    seed=args.seed) if args.sft_warmstart else None
    spec = WarmStart(question_ids=all_ids[:n_sft], model=args.model, small_vocab=args.small_vocab, sft=sft,
                     noisy_copies=args.noisy_copies, seed=args.seed,
                     rollout=RolloutConfig(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens))
    return str(prepare_policy(output / "policy", lambda: local_env(args), spec))


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(p for p in directory.glob("iter_*") if CHECKPOINT.fullmatch(p.name) and p.is_dir())
    return found[-1] if found else None


def save_checkpoint(algo, directory: Path, keep: int) -> Path:
    """Write to a hidden directory and rename it into place: a kill mid-save leaves the previous one intact."""
    from research_env.staging import staged_directory

    final = directory / f"iter_{algo.iteration:06d}"
    with staged_directory(final) as staging:
        algo.save_to_path(str(staging.resolve()))
    for old in sorted(p for p in directory.glob("iter_*") if CHECKPOINT.fullmatch(p.name))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from agents.training.reporting import progress_line, training_log, write_run_config
    from research_env.retrieval import reclaim_jvm_signal_handlers

    output = Path(args.output)
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_run_config(output, args)
    all_ids: list[str] = []
    if args.questions or args.small_vocab or args.sft_warmstart:
        print("loading the questions (the BM25 index is built on first use) ...", flush=True)
        env = local_env(args)
        all_ids = env.unwrapped.dataset.ids
        env.close()
    model = warm_start(args, output, all_ids)  # before Ray starts: SFT needs no cluster
    print(f"starting Ray ({args.ray_address or 'local'}) ...", flush=True)
    if args.ray_address:
        ray.init(address=args.ray_address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False)
    reclaim_jvm_signal_handlers()  # the warm start's embedded BM25 started a JVM, and ray.init took its signals
    log = training_log(output, args)
    print("building the algorithm: policy and reference on the learner, envs and BM25 index on the env runner ...",
          flush=True)
    algo = build_config(args, model=model, question_ids=all_ids[: args.questions] or None).build_algo()
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
