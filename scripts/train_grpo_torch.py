"""GRPO on the ReSearch envs in plain PyTorch, without RLlib: the example of driving the same envs, rollout
engine, advantages and loss from your own loop. Same flags, defaults, warm start, held-out evaluation and metric
names as scripts/train_grpo_rllib.py (all from agents.training); writes DIR/config.json, DIR/policy/,
DIR/metrics.jsonl, DIR/tb/ and DIR/curves.png.

    python scripts/train_grpo_torch.py                    # the learned-search recipe on the synthetic world
    python scripts/train_grpo_torch.py --algorithm rloo   # any of agents.training.algorithms.ALGORITHMS
    python scripts/train_grpo_torch.py --env ReSearch-MuSiQue-v0 --eval-every 0 --no-small-vocab --no-sft-warmstart \
        --model /path/to/Qwen2.5-7B --prompts 64 --lr 1e-6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agents.training.cli import training_parser, validate_args
from agents.training.run import eval_line, held_out_evaluation, local_env, question_ids, warm_start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = training_parser(__doc__, output="runs/grpo_torch")
    args = parser.parse_args(argv)
    args.settings = validate_args(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from agents.generation.rollout import token_env
    from agents.policies.models import load_causal_lm
    from agents.training.interrupts import GracefulStop
    from agents.training.reporting import progress_line, training_log, write_run_config
    from agents.training.torch_loop import TorchGRPO

    settings = args.settings
    output = Path(args.output)
    write_run_config(output, args)
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(settings.seed)
    print("loading the questions (the BM25 index is built on first use) ...", flush=True)
    train_ids = question_ids(args)
    train_ids = train_ids[: args.questions] if args.questions else train_ids
    # the policy: a checkpoint, or the warm start (small vocabulary, SFT) written to DIR/policy, as the RLlib
    # trainer builds it: a random policy never writes a valid format, so GRPO would get no signal
    model, tokenizer = load_causal_lm(
        warm_start(args, output, train_ids) or args.model, device="cpu", dtype=torch.float32
    )
    envs = [
        token_env(local_env(args), tokenizer, settings.rollout_config())
        for _ in range(settings.prompts_per_batch * settings.group_size)
    ]
    evaluation = held_out_evaluation(args)
    print(
        f"{settings.algorithm} on {len(train_ids)} questions of {args.env}: "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(tokenizer):,}",
        flush=True,
    )

    # the loop: rollout groups -> advantages -> clipped-loss update -> log (see TorchGRPO.iteration)
    trainer = TorchGRPO.create(model, tokenizer, envs, train_ids, settings)
    log = training_log(output, args)
    log.truncate(0)
    started = time.perf_counter()
    with GracefulStop() as stop:
        try:
            if evaluation is not None:  # the starting policy: the baseline of later evaluations
                row = log.write(0, evaluation(trainer.policy, tokenizer))
                print(eval_line(row, args.iterations, len(evaluation.question_ids)), flush=True)
            while trainer.step < args.iterations and not stop.requested:
                result = trainer.iteration()
                if evaluation is not None and (trainer.step % args.eval_every == 0 or trainer.step == args.iterations):
                    result = {**result, **evaluation(trainer.policy, tokenizer)}
                row = log.write(trainer.step, result)
                print(progress_line(row, args.iterations), flush=True)
                log.plot()
        finally:
            log.close()
            if evaluation is not None:
                evaluation.close()
    how = f"stopped by {stop.requested.name}" if stop.requested else "done"
    print(f"{how}: {trainer.step} iterations in {time.perf_counter() - started:.1f}s; {output}/curves.png", flush=True)
    return stop.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
