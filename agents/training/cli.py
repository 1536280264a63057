"""The command line of both trainers, derived from :class:`GRPOSettings` (one flag per setting, with its name,
default and help text) plus the flags of a run: env and data, policy, warm start, output. Validation happens
here, before any model, index or Ray cluster starts.

Light on purpose (argparse and the settings only), so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from agents.training.settings import DEFAULT_ENV_ID, GRPOSettings

#: What a zero-argument run changes from the paper's settings, so that it finishes in minutes on a laptop CPU.
QUICK_RUN: dict[str, Any] = {"prompts_per_batch": 2, "group_size": 4, "max_new_tokens": 16, "max_tokens": 1024,
                             "max_turns": 2}

#: Short spellings kept for the flags people type most.
ALIASES = {"prompts_per_batch": ["--prompts"], "num_minibatches": ["--minibatches"]}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _turns(value: str) -> int | None:
    turns = int(value)
    return None if turns == 0 else turns


def add_settings_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """One flag per field of :class:`GRPOSettings`; ``defaults`` overrides a field's default (the help says
    the paper's value then)."""
    defaults = defaults or {}
    group = parser.add_argument_group("algorithm (defaults: the paper's, SPEC §6, unless noted)")
    for setting in fields(GRPOSettings):
        paper = setting.default if setting.default is not MISSING else None
        default = defaults.get(setting.name, paper)
        help_text = setting.metadata["help"] + (f" (paper: {paper})" if setting.name in defaults else "")
        flags = [_flag(setting.name), *ALIASES.get(setting.name, [])]
        if isinstance(paper, bool):
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif setting.name == "max_turns":
            group.add_argument(*flags, type=_turns, default=default, help=help_text + "; 0: unlimited")
        else:
            group.add_argument(*flags, type=type(paper), default=default, help=help_text)


def add_run_arguments(parser: argparse.ArgumentParser, output: str) -> None:
    """The flags every training run has besides the algorithm's settings."""
    run = parser.add_argument_group("run")
    run.add_argument("--iterations", type=int, default=2, help="train until this many iterations in total")
    run.add_argument("--output", default=output, help="run directory")
    run.add_argument("--wandb", default=None, metavar="PROJECT", help="also log to this Weights & Biases project")
    run.add_argument("--wandb-mode", default=None, choices=("online", "offline", "disabled"),
                     help="W&B mode (default: $WANDB_MODE, else online); offline needs no network: wandb sync later")
    data = parser.add_argument_group("env and data")
    data.add_argument("--env", default=DEFAULT_ENV_ID, help="a registered env id (ReSearch-*-v0)")
    data.add_argument("--dataset", default=None, help="a question file (FlashRAG/MuSiQue/HotpotQA/2Wiki JSONL, "
                      "parquet) instead of the env's default")
    data.add_argument("--corpus", default=None, help="a JsonCollection JSONL corpus instead of the env's default")
    data.add_argument("--top-k", type=int, default=None, help="passages per search (default: the env's)")
    data.add_argument("--questions", type=int, default=0, help="train on the first N questions only (0: all)")
    data.add_argument("--retriever-url", default=None, help="a retrieval service instead of the embedded BM25")
    policy = parser.add_argument_group("policy")
    policy.add_argument("--model", default=None, help="local HF checkpoint directory (default: the tiny model)")
    warm = parser.add_argument_group("warm start (built before training)")
    warm.add_argument("--small-vocab", action="store_true",
                      help="a fresh 1.4M-parameter model with an 8,192-token BPE trained on the training traces")
    warm.add_argument("--sft-warmstart", action="store_true", help="SFT on oracle traces before GRPO")
    warm.add_argument("--sft-questions", type=int, default=0, help="SFT on the first N questions (0: --questions)")
    warm.add_argument("--sft-epochs", type=int, default=20)
    warm.add_argument("--sft-lr", type=float, default=3e-3)
    warm.add_argument("--sft-batch-size", type=int, default=4)
    warm.add_argument("--noisy-copies", type=int, default=1, help="noisy copies of each oracle trace")


def training_parser(description: str, output: str) -> argparse.ArgumentParser:
    """The parser both training scripts start from; each adds the flags of its own engine."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, output)
    add_settings_arguments(parser, QUICK_RUN)
    return parser


def settings_from_args(args: argparse.Namespace) -> GRPOSettings:
    return GRPOSettings(**{setting.name: getattr(args, setting.name) for setting in fields(GRPOSettings)})


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``gym.make`` keyword arguments of ``--dataset``, ``--corpus``, ``--top-k`` and ``--retriever-url``."""
    kwargs: dict[str, Any] = {}
    for name in ("dataset", "corpus", "top_k", "retriever_url"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GRPOSettings:
    """Every check that needs no model, index or cluster, so a bad flag fails in a second, not after start-up;
    exits through ``parser.error`` with the flag named."""
    from agents.training.algorithms import get_algorithm

    settings = settings_from_args(args)
    try:
        settings.validate()
        get_algorithm(settings.algorithm)
    except ValueError as error:
        parser.error(str(error))
    for name, low in (("iterations", 1), ("top_k", 1), ("questions", 0), ("sft_questions", 0), ("noisy_copies", 0)):
        value = getattr(args, name, None)
        if value is not None and value < low:
            parser.error(f"{_flag(name)} must be >= {low}, got {value}")
    for name in ("dataset", "corpus", "model"):
        value = getattr(args, name, None)
        if value is not None and not os.path.exists(value):
            parser.error(f"{_flag(name)} {value}: no such file or directory")
    if getattr(args, "wandb", None) and importlib.util.find_spec("wandb") is None:
        parser.error("--wandb needs the wandb package: pip install wandb (it is in the [train] extra)")
    if args.model is not None and not Path(args.model).is_dir():
        parser.error(f"--model {args.model}: expected a checkpoint directory (config.json, weights, tokenizer)")
    if args.questions and args.questions < settings.prompts_per_batch:
        parser.error(f"--questions {args.questions} < --prompts-per-batch {settings.prompts_per_batch}: a batch "
                     "draws that many distinct questions")
    return settings
