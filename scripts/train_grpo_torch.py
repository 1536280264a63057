"""GRPO on the ReSearch envs in plain PyTorch, without RLlib: the example of driving the same envs, rollout
engine, advantages and loss from your own loop. Zero arguments: two quick iterations of the tiny default model.
Same flags, defaults and metric names as scripts/train_grpo_rllib.py (both come from agents.training.cli);
writes DIR/config.json, DIR/metrics.jsonl, DIR/tb/ and DIR/curves.png.

    python scripts/train_grpo_torch.py                                  # tiny Qwen2 (Qwen2.5 vocabulary), CPU
    python scripts/train_grpo_torch.py --algorithm rloo                 # any of agents.training.algorithms.ALGORITHMS
    python scripts/train_grpo_torch.py --small-vocab --sft-warmstart --iterations 20 --lr 3e-4 --warmup-iterations 2
    python scripts/train_grpo_torch.py --model /path/to/Qwen2.5-7B --prompts 64 --lr 1e-6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agents.training.cli import env_kwargs, training_parser, validate_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = training_parser(__doc__, output="runs/grpo_torch")
    args = parser.parse_args(argv)
    args.settings = validate_args(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import gymnasium as gym
    import torch

    import research_env  # noqa: F401  (registers the env ids)
    from agents.generation.rollout import token_env
    from agents.policies.models import load_causal_lm
    from agents.policies.small_vocab import oracle_trace_texts, small_qwen2, train_small_tokenizer
    from agents.training.interrupts import GracefulStop
    from agents.training.reporting import progress_line, training_log, write_run_config
    from agents.training.sft import SFTConfig, build_sft_dataset, sft_train
    from agents.training.torch_loop import TorchGRPO

    settings = args.settings
    torch.manual_seed(settings.seed)
    text_env = gym.make(args.env, **env_kwargs(args))
    question_ids = text_env.unwrapped.dataset.ids
    question_ids = question_ids[: args.questions] if args.questions else question_ids

    # policy: a checkpoint, or a fresh small-vocabulary model for CPU learning runs
    if args.small_vocab:
        tokenizer = train_small_tokenizer(oracle_trace_texts(text_env, question_ids))
        model = small_qwen2(tokenizer, seed=settings.seed)
    else:
        model, tokenizer = load_causal_lm(args.model)
    envs = [token_env(gym.make(args.env, **env_kwargs(args)), tokenizer, settings.rollout_config())
            for _ in range(settings.prompts_per_batch * settings.group_size)]
    print(f"{settings.algorithm} on {len(question_ids)} questions of {args.env}: "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(tokenizer):,}", flush=True)

    # optional SFT warm start: a random policy never writes a valid format, so GRPO would get no signal
    if args.sft_warmstart:
        sft_ids = question_ids[: args.sft_questions] if args.sft_questions else question_ids
        examples = build_sft_dataset(envs[0], sft_ids, noisy_copies=args.noisy_copies, seed=settings.seed)
        sft = SFTConfig(epochs=args.sft_epochs, lr=args.sft_lr, batch_size=args.sft_batch_size, seed=settings.seed)
        sft_train(model, examples, sft, tokenizer.pad_token_id)

    # the loop: rollout groups -> advantages -> clipped-loss update -> log (see TorchGRPO.iteration)
    trainer = TorchGRPO.create(model, tokenizer, envs, question_ids, settings)
    output = Path(args.output)
    write_run_config(output, args)
    log = training_log(output, args)
    log.truncate(0)
    started = time.perf_counter()
    with GracefulStop() as stop:
        try:
            while trainer.step < args.iterations and not stop.requested:
                row = log.write(trainer.step + 1, trainer.iteration())
                print(progress_line(row, args.iterations), flush=True)
                log.plot()
        finally:
            log.close()
    how = f"stopped by {stop.requested.name}" if stop.requested else "done"
    print(f"{how}: {trainer.step} iterations in {time.perf_counter() - started:.1f}s; {output}/curves.png", flush=True)
    return stop.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
