"""Train a ReSearch policy with GRPO (or RLOO, Dr. GRPO, REINFORCE++-baseline) on Ray RLlib.

With no arguments: a run that learns to search, on CPU in under 10 minutes (agents/training/recipe.py). The
synthetic world ``ReSearch-Synthetic-v0`` (1-hop questions whose answers only its corpus holds); a small-vocabulary
policy warm-started by SFT on the train split's traces, half of which answer at once without searching; 30 GRPO
iterations on the dev split (unseen entities), BM25 top-1; every 5 iterations a greedy evaluation on 200 test-split
questions (entities seen in neither), whose ``eval/reward`` and ``eval/searches_per_episode`` rise. Writes
DIR/config.json, DIR/policy/, DIR/checkpoints/, DIR/tb/, DIR/metrics.jsonl and DIR/curves.png; ``--resume``
continues from the newest readable checkpoint in DIR. Ctrl-C (or SIGTERM) stops after the current iteration with
a checkpoint; a second one stops at once.

Real data is one flag away: ``--env ReSearch-MuSiQue-v0 --eval-dataset PATH``, or ``--env ReSearch-v0 --dataset
PATH --corpus PATH`` (a directory of split files takes ``--split``/``--sft-split``/``--eval-split`` too).
``--no-small-vocab --no-sft-warmstart`` trains ``--model`` as it is; ``--eval-every 0`` evaluates nothing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

from agents.generation.engines import ROLLOUT_BACKENDS
from agents.training.cli import env_kwargs, training_parser, validate_args
from agents.training.run import eval_line, held_out_evaluation, question_ids, warm_start
from agents.training.settings import GRPOSettings

CHECKPOINT = re.compile(r"iter_(\d{6})")


def build_parser() -> argparse.ArgumentParser:
    p = training_parser(__doc__, output="runs/grpo_rllib")
    rllib = p.add_argument_group("Ray RLlib")
    rllib.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    rllib.add_argument("--checkpoint-every", type=int, default=5, help="save every N iterations (and at the end)")
    rllib.add_argument("--keep-checkpoints", type=int, default=2)
    rllib.add_argument("--num-learners", type=int, default=0, help="0: learn in this process; N > 1: DDP")
    rllib.add_argument("--num-gpus-per-learner", type=float, default=0)
    rllib.add_argument("--num-env-runners", type=int, default=0, help="0: sample in this process")
    rllib.add_argument("--num-gpus-per-env-runner", type=float, default=0, help="GPUs of each env runner's engine")
    rllib.add_argument(
        "--rollout-backend",
        choices=ROLLOUT_BACKENDS,
        default="auto",
        help="the env runners' engine: vllm (weights reloaded in place after each update), hf (the exact reference), "
        "auto (vllm where it is installed and a GPU is present, else hf)",
    )
    rllib.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs of one vLLM engine (tensor parallel)")
    rllib.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    rllib.add_argument("--lora-rank", type=int, default=16)
    memory = p.add_argument_group("learner memory (see agents/training/memory.py for what fits where)")
    memory.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="compute dtype (default: bfloat16 on a GPU, float32 on CPU); log-probs and loss are float32",
    )
    memory.add_argument("--gradient-checkpointing", action="store_true", help="recompute layers in the backward pass")
    memory.add_argument(
        "--strategy",
        choices=("ddp", "fsdp"),
        default="ddp",
        help="ddp: replicate the model on each learner; fsdp: shard it over --num-learners (FSDP2)",
    )
    rllib.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    rllib.add_argument(
        "--ray-all-interfaces",
        action="store_true",
        help="let the local Ray instance listen on every interface (default: 127.0.0.1 only)",
    )
    rllib.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.settings = validate_args(parser, args)
    for name in ("checkpoint_every", "keep_checkpoints", "tensor_parallel_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def build_config(args: argparse.Namespace, model: str | None = None, question_ids: list[str] | None = None):
    """The GRPOConfig of these arguments (``model``: the warm-started policy, overriding ``--model``)."""
    from dataclasses import asdict

    from agents.training.rllib import GRPOConfig

    settings: GRPOSettings = args.settings
    lora = (
        {"r": args.lora_rank, "lora_alpha": 2 * args.lora_rank, "target_modules": "all-linear", "lora_dropout": 0.0}
        if args.lora
        else None
    )
    return (
        GRPOConfig()
        .environment(env=args.env, env_config=env_kwargs(args))
        .training(**{k: v for k, v in asdict(settings).items() if k != "seed"}, question_ids=question_ids)
        .policy(
            model=model or args.model,
            lora=lora,
            dtype=args.dtype,
            gradient_checkpointing=args.gradient_checkpointing,
            strategy=args.strategy,
        )
        .learners(num_learners=args.num_learners, num_gpus_per_learner=args.num_gpus_per_learner)
        .env_runners(num_env_runners=args.num_env_runners, num_gpus_per_env_runner=args.num_gpus_per_env_runner)
        .rollouts(backend=args.rollout_backend, tensor_parallel_size=args.tensor_parallel_size)
        .debugging(seed=settings.seed)
    )


def checkpoints_newest_first(directory: Path) -> list[Path]:
    return sorted((p for p in directory.glob("iter_*") if CHECKPOINT.fullmatch(p.name) and p.is_dir()), reverse=True)


def latest_checkpoint(directory: Path) -> Path | None:
    found = checkpoints_newest_first(directory)
    return found[0] if found else None


def restore_newest_readable(algo, directory: Path) -> Path | None:
    """Restore the newest checkpoint that loads; one that does not (truncated by a crash or a full disk) is named
    and skipped. None when there is no checkpoint; an error naming them all when none loads."""
    failures = []
    for checkpoint in checkpoints_newest_first(directory):
        try:
            algo.restore_from_path(str(checkpoint.resolve()))
        except Exception as error:  # noqa: BLE001  (any failure to load means: try the previous one)
            print(
                f"checkpoint {checkpoint} is unreadable ({type(error).__name__}: {error}); "
                "falling back to the previous one",
                flush=True,
            )
            failures.append(f"{checkpoint.name}: {type(error).__name__}")
            continue
        return checkpoint
    if failures:
        raise RuntimeError(
            f"no readable checkpoint in {directory} ({'; '.join(failures)}); move them away to start from scratch"
        )
    return None


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
    import torch

    from agents.training.interrupts import GracefulStop
    from agents.training.reporting import progress_line, training_log, write_run_config
    from agents.training.rllib.cluster import init_ray

    output = Path(args.output)
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_run_config(output, args)
    torch.set_num_threads(args.torch_threads)
    all_ids: list[str] = []
    if args.questions or args.small_vocab or args.sft_warmstart:
        print("loading the questions (the BM25 index is built on first use) ...", flush=True)
        all_ids = question_ids(args)
    model = warm_start(args, output, all_ids)  # before Ray starts: SFT needs no cluster
    evaluation = held_out_evaluation(args)
    print(f"starting Ray ({args.ray_address or 'local, on 127.0.0.1'}) ...", flush=True)
    init_ray(args.ray_address, args.num_cpus, all_interfaces=args.ray_all_interfaces)
    import ray

    log = training_log(output, args)
    algo = None

    def evaluate() -> dict[str, float]:
        # the local env runner's module holds the learner's weights: they are synced after every update
        module = algo.env_runner.module
        return evaluation(module.model, module.tokenizer)

    with GracefulStop() as stop:
        try:
            print(
                "building the algorithm: policy and reference on the learner, envs and BM25 index on the env "
                "runner ...",
                flush=True,
            )
            algo = build_config(args, model=model, question_ids=all_ids[: args.questions] or None).build_algo()
            if args.resume and (checkpoint := restore_newest_readable(algo, checkpoints)) is not None:
                print(f"resumed from {checkpoint} at iteration {algo.iteration}", flush=True)
            elif args.resume:
                print(f"no checkpoint in {checkpoints}; starting from scratch", flush=True)
            log.truncate(algo.iteration)
            started = time.perf_counter()
            if evaluation is not None and algo.iteration == 0:  # the starting policy: the baseline of later ones
                row = log.write(0, evaluate())
                print(eval_line(row, args.iterations, len(evaluation.question_ids)), flush=True)
            while algo.iteration < args.iterations and not stop.requested:
                result = algo.train()
                if evaluation is not None and (
                    algo.iteration % args.eval_every == 0 or algo.iteration == args.iterations
                ):
                    result = {**result, **evaluate()}
                row = log.write(algo.iteration, result)
                print(progress_line(row, args.iterations), flush=True)
                log.plot()
                if algo.iteration % args.checkpoint_every == 0 or algo.iteration == args.iterations or stop.requested:
                    save_checkpoint(algo, checkpoints, args.keep_checkpoints)
            how = f"stopped by {stop.requested.name}" if stop.requested else "done"
            print(
                f"{how}: {algo.iteration} iterations ({time.perf_counter() - started:.0f}s this run); "
                f"{output}/curves.png, {output}/tb, {latest_checkpoint(checkpoints)}"
                + (" (continue with --resume)" if stop.requested else ""),
                flush=True,
            )
        finally:
            log.close()
            if evaluation is not None:
                evaluation.close()
            if algo is not None:
                algo.stop()
            ray.shutdown()
    return stop.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
