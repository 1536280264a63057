"""Train a ReSearch policy with GRPO (or RLOO, Dr. GRPO, REINFORCE++-baseline) on Ray RLlib.

With no arguments: a run that learns to search, on CPU in under 10 minutes. The synthetic world
``ReSearch-Synthetic-v0`` (1-hop questions whose answers only its corpus holds); a small-vocabulary policy
warm-started by SFT on the train split's traces, half of which answer at once without searching; 30 GRPO
iterations on the dev split (unseen entities), BM25 top-1; every 5 iterations a greedy evaluation on 200
test-split questions (entities seen in neither), whose ``eval/reward`` and ``eval/searches_per_episode`` rise.
Writes DIR/policy/, DIR/checkpoints/, DIR/tb/, DIR/metrics.jsonl and DIR/curves.png; ``--resume`` continues
from the newest checkpoint in DIR.

Real data is one flag away: ``--env ReSearch-MuSiQue-v0``, or ``--env ReSearch-v0 --dataset PATH --corpus PATH``
(a directory of split files takes ``--split``/``--sft-split``/``--eval-split`` too; a single file takes
``--eval-dataset``). ``--no-small-vocab --no-sft-warmstart`` trains ``--model`` as it is.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

from agents.training.algorithms import ALGORITHMS

CHECKPOINT = re.compile(r"iter_(\d{6})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from research_env.registration import SYNTHETIC_ENV_ID

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=30, help="train until this many iterations in total")
    p.add_argument("--output", default="runs/grpo_rllib", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--checkpoint-every", type=int, default=5, help="save every N iterations (and at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    data = p.add_argument_group("environment and data")
    data.add_argument("--env", default=SYNTHETIC_ENV_ID, help="registered env id (default: the synthetic world)")
    data.add_argument("--dataset", default=None, help="QA file or directory of split files, for --env ReSearch-v0")
    data.add_argument("--corpus", default=None, help="JsonCollection JSONL to index with BM25 (with --dataset)")
    data.add_argument("--env-kwargs", type=json.loads, default=None,
                      help='more env keywords as JSON, e.g. \'{"hops": 2}\' (for the synthetic env, merged over '
                      "agents.training.recipe.SYNTHETIC_WORLD)")
    data.add_argument("--split", default=None, help="split GRPO trains on (envs with splits; synthetic: dev)")
    data.add_argument("--sft-split", default=None, help="split the warm start imitates (synthetic: train)")
    data.add_argument("--eval-split", default=None, help="held-out split of --eval-every (synthetic: test)")
    data.add_argument("--eval-dataset", default=None, help="held-out QA file for envs without splits")
    data.add_argument("--eval-every", type=int, default=5, help="greedy held-out evaluation every N iterations "
                      "(and before the first; 0: never)")
    data.add_argument("--eval-questions", type=int, default=200, help="held-out questions per evaluation")
    p.add_argument("--model", default=None, help="local HF checkpoint directory (default: the tiny model)")
    p.add_argument("--algorithm", default="grpo", choices=sorted(ALGORITHMS))
    p.add_argument("--prompts", type=int, default=16, help="questions per train batch (paper: 256)")
    p.add_argument("--group-size", type=int, default=5, help="rollouts per question (paper: 5)")
    p.add_argument("--lr", type=float, default=3e-4, help="(paper: 1e-6, for a 7B model)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="tokens per generation call")
    p.add_argument("--max-tokens", type=int, default=1024, help="context budget: prompt + response + results")
    p.add_argument("--max-turns", type=int, default=6, help="generation calls per episode (0: unlimited)")
    p.add_argument("--micro-batch-size", type=int, default=16, help="trajectories per forward/backward")
    p.add_argument("--num-learners", type=int, default=0, help="0: learn in this process; N > 1: DDP")
    p.add_argument("--num-gpus-per-learner", type=float, default=0)
    p.add_argument("--num-env-runners", type=int, default=0, help="0: sample in this process")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--retriever-url", default=None, help="a retrieval service instead of the embedded BM25")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1, help="intra-op threads of this process; small models gain "
                   "little from more, and on a busy machine more threads spin (measured 0.16 s vs 0.60 s per SFT step)")
    p.add_argument("--top-k", type=int, default=1, help="passages per search (paper: 5)")
    p.add_argument("--questions", type=int, default=0, help="train on the first N questions only (0: all)")
    p.add_argument("--minibatches", type=int, default=2, help="optimizer steps per train batch (paper: 1)")
    p.add_argument("--drop-zero-advantage", action=argparse.BooleanOptionalAction, default=True,
                   help="leave groups of equal rewards out of the update")
    p.add_argument("--warmup-iterations", type=int, default=4, help="linear learning-rate warmup")
    warm = p.add_argument_group("warm start (written to DIR/policy before training)")
    warm.add_argument("--small-vocab", action=argparse.BooleanOptionalAction, default=True,
                      help="a fresh ~0.5M-parameter model with a small BPE trained on the warm start's traces")
    warm.add_argument("--split-names", action=argparse.BooleanOptionalAction, default=True,
                      help="train that BPE on synthetic names spelled out as syllables, so unseen names are "
                      "sequences of known tokens")
    warm.add_argument("--sft-warmstart", action=argparse.BooleanOptionalAction, default=True,
                      help="SFT on oracle traces before GRPO")
    warm.add_argument("--sft-questions", type=int, default=0, help="SFT on the first N questions (0: all)")
    warm.add_argument("--sft-epochs", type=int, default=8)
    warm.add_argument("--sft-lr", type=float, default=3e-3)
    warm.add_argument("--sft-batch-size", type=int, default=8)
    warm.add_argument("--noisy-copies", type=int, default=0, help="noisy copies of each oracle trace")
    warm.add_argument("--no-search-share", type=float, default=0.5,
                      help="share of SFT traces that answer at once with a wrong guess instead of searching, so "
                      "that GRPO, not SFT, teaches the policy to search")
    args = p.parse_args(argv)
    resolve_splits(p, args)
    return args


def resolve_splits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the env keywords, and the split defaults of envs with splits (the synthetic world; a dataset directory);
    refuse split flags where there are none."""
    from agents.training.recipe import SYNTHETIC_WORLD
    from research_env.registration import SYNTHETIC_ENV_ID

    args.env_kwargs = {**(SYNTHETIC_WORLD if args.env == SYNTHETIC_ENV_ID else {}), **(args.env_kwargs or {})}
    has_splits = args.env == SYNTHETIC_ENV_ID or (args.dataset is not None and Path(args.dataset).is_dir())
    if has_splits:
        args.split = args.split or ("dev" if args.env == SYNTHETIC_ENV_ID else None)
        args.sft_split = args.sft_split or ("train" if args.env == SYNTHETIC_ENV_ID else args.split)
        args.eval_split = args.eval_split or ("test" if args.eval_dataset is None else None)
    elif args.split or args.sft_split or args.eval_split:
        parser.error(f"--split, --sft-split and --eval-split need an env with splits ({SYNTHETIC_ENV_ID}, or "
                     "--dataset DIR holding train/dev/test files); give single files with --dataset/--eval-dataset")
    if args.eval_every and args.eval_split is None and args.eval_dataset is None:
        parser.error(f"--eval-every needs held-out questions: --eval-dataset PATH, or an env with splits "
                     f"(--env {SYNTHETIC_ENV_ID} or --dataset DIR); --eval-every 0 turns evaluation off")


def env_config(args: argparse.Namespace, split: str | None = None, dataset: str | None = None) -> dict:
    """The env keywords of the training env (``split``/``dataset``: of another split or held-out file)."""
    config: dict = dict(args.env_kwargs)
    for key, value in (("dataset", dataset or args.dataset), ("corpus", args.corpus), ("top_k", args.top_k),
                       ("split", split or args.split), ("retriever_url", args.retriever_url)):
        if value is not None:
            config[key] = value
    return config


def build_config(args: argparse.Namespace, model: str | None = None, question_ids: list[str] | None = None):
    """The GRPOConfig of these arguments (``model``: the warm-started policy, overriding ``--model``)."""
    from agents.training.rllib import GRPOConfig
    from agents.training.rllib.algorithm import warmup_lr

    lora = ({"r": args.lora_rank, "lora_alpha": 2 * args.lora_rank, "target_modules": "all-linear",
             "lora_dropout": 0.0} if args.lora else None)
    return (GRPOConfig()
            .environment(env=args.env, env_config=env_config(args))
            .training(algorithm=args.algorithm, prompts_per_batch=args.prompts, group_size=args.group_size,
                      lr=warmup_lr(args.lr, args.warmup_iterations, args.prompts * args.group_size),
                      micro_batch_size=args.micro_batch_size,
                      num_minibatches=args.minibatches, drop_zero_advantage=args.drop_zero_advantage,
                      question_ids=question_ids)
            .rollouts(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns or None)
            .policy(model=model or args.model, lora=lora)
            .learners(num_learners=args.num_learners, num_gpus_per_learner=args.num_gpus_per_learner)
            .env_runners(num_env_runners=args.num_env_runners)
            .debugging(seed=args.seed))


def local_env(args: argparse.Namespace, split: str | None = None, dataset: str | None = None):  # -> gym.Env
    """An env in this process, with the embedded retriever: it lists the questions, plays the oracle for the warm
    start and the held-out evaluation (the env runners build their own, with ``--retriever-url`` if given)."""
    import gymnasium as gym

    import research_env  # noqa: F401  (registers the env ids)

    config = env_config(args, split, dataset)
    config.pop("retriever_url", None)
    return gym.make(args.env, **config)


def rollout_config(args: argparse.Namespace):  # -> RolloutConfig
    from agents.generation.rollout import RolloutConfig

    return RolloutConfig(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens,
                         max_turns=args.max_turns or None)


def warm_start(args: argparse.Namespace, output: Path, train_ids: list[str]) -> str | None:
    """Build (or reuse) DIR/policy when --small-vocab or --sft-warmstart asks for it; its path, else None.

    SFT imitates the ``--sft-split`` questions where the env has splits, else the first training questions."""
    if not (args.small_vocab or args.sft_warmstart):
        return None
    from agents.policies.warmstart import WarmStart, prepare_policy
    from agents.training.sft import SFTConfig

    if args.sft_split is not None and args.sft_split != args.split:
        env = local_env(args, split=args.sft_split)
        sft_ids = env.unwrapped.dataset.ids
        env.close()
    else:
        sft_ids = train_ids
    n_sft = args.sft_questions or (args.questions if sft_ids is train_ids else 0) or len(sft_ids)
    sft = SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=args.sft_batch_size,
                    seed=args.seed) if args.sft_warmstart else None
    spec = WarmStart(question_ids=sft_ids[:n_sft], model=args.model, small_vocab=args.small_vocab, sft=sft,
                     noisy_copies=args.noisy_copies, no_search_share=args.no_search_share if sft else 0.0,
                     split_names=args.split_names, seed=args.seed, rollout=rollout_config(args))
    return str(prepare_policy(output / "policy", lambda: local_env(args, split=args.sft_split), spec))


def held_out_evaluation(args: argparse.Namespace):  # -> HeldOutEval | None
    """The greedy evaluation of ``--eval-every`` on the first ``--eval-questions`` held-out questions, or None."""
    if not args.eval_every:
        return None
    from agents.training.heldout import HeldOutEval

    def make_env():
        return local_env(args, split=args.eval_split, dataset=args.eval_dataset)

    env = make_env()
    ids = env.unwrapped.dataset.ids[: args.eval_questions]
    env.close()
    return HeldOutEval(make_env, ids, rollout_config(args), temperature=0.0, seed=args.seed)


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
    import torch

    from agents.training.reporting import TrainingLog, progress_line
    from research_env.retrieval import reclaim_jvm_signal_handlers

    torch.set_num_threads(args.torch_threads)
    output = Path(args.output)
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    all_ids: list[str] = []
    if args.questions or args.small_vocab or args.sft_warmstart:
        env = local_env(args)
        all_ids = env.unwrapped.dataset.ids
        env.close()
    model = warm_start(args, output, all_ids)  # before Ray starts: SFT needs no cluster
    evaluation = held_out_evaluation(args)
    if args.ray_address:
        ray.init(address=args.ray_address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False)
    reclaim_jvm_signal_handlers()  # the warm start's embedded BM25 started a JVM, and ray.init took its signals
    log = TrainingLog(output)
    algo = build_config(args, model=model, question_ids=all_ids[: args.questions] or None).build_algo()

    def evaluate() -> dict[str, float]:
        # the local env runner's module holds the learner's weights: they are synced after every update
        module = algo.env_runner.module
        return evaluation(module.model, module.tokenizer)

    try:
        if args.resume and (checkpoint := latest_checkpoint(checkpoints)) is not None:
            algo.restore_from_path(str(checkpoint.resolve()))
            print(f"resumed from {checkpoint} at iteration {algo.iteration}", flush=True)
        elif args.resume:
            print(f"no checkpoint in {checkpoints}; starting from scratch", flush=True)
        log.truncate(algo.iteration)
        started = time.perf_counter()
        if evaluation is not None and algo.iteration == 0:  # the starting policy, the baseline of every later one
            row = log.write(0, evaluate())
            print(f"iter    0/{args.iterations} | eval reward {row['eval/reward']:.3f} ± {row['eval/reward_se']:.3f} "
                  f"searches {row['eval/searches_per_episode']:.2f} (greedy, {len(evaluation.question_ids)} "
                  "held-out questions)", flush=True)
        while algo.iteration < args.iterations:
            result = algo.train()
            if evaluation is not None and (algo.iteration % args.eval_every == 0 or algo.iteration == args.iterations):
                result = {**result, **evaluate()}
            row = log.write(algo.iteration, result)
            print(progress_line(row, args.iterations), flush=True)
            log.plot()
            if algo.iteration % args.checkpoint_every == 0 or algo.iteration == args.iterations:
                save_checkpoint(algo, checkpoints, args.keep_checkpoints)
        print(f"done: {algo.iteration} iterations ({time.perf_counter() - started:.0f}s this run); "
              f"{output}/curves.png, {output}/tb, {latest_checkpoint(checkpoints)}", flush=True)
    finally:
        log.close()
        if evaluation is not None:
            evaluation.close()
        algo.stop()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
