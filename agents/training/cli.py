"""The command line of both trainers, derived from :class:`GRPOSettings` (one flag per setting, with its name,
default and help text) plus the flags of a run: env and data, policy, warm start, output. Validation happens
here, before any model, index or Ray cluster starts.

Light on purpose (argparse and the settings only), so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from agents.training import recipe
from agents.training.settings import GRPOSettings

#: The env of a zero-argument run: the synthetic world, whose answers only its corpus holds.
SYNTHETIC_ENV_ID = "ReSearch-Synthetic-v0"

#: Short spellings kept for the flags people type most.
ALIASES = {"prompts_per_batch": ["--prompts"], "num_minibatches": ["--minibatches"]}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional_count(value: str) -> int | None:
    """A count whose 0 means "no limit" (the setting's None)."""
    count = int(value)
    return None if count == 0 else count


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
        elif paper is None:  # the optional limits: max_turns, max_batch_tokens
            group.add_argument(*flags, type=_optional_count, default=default, help=help_text + "; 0: no limit")
        else:
            group.add_argument(*flags, type=type(paper), default=default, help=help_text)


def add_run_arguments(parser: argparse.ArgumentParser, output: str) -> None:
    """The flags every training run has besides the algorithm's settings; defaults are the recipe of
    :mod:`agents.training.recipe` (a run that learns to search on a laptop CPU)."""
    run = parser.add_argument_group("run")
    run.add_argument("--iterations", type=int, default=30, help="train until this many iterations in total")
    run.add_argument("--output", default=output, help="run directory")
    run.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads of the driver; small models gain "
        "little from more, and on a busy machine more threads spin (0.16 s vs 0.60 s per SFT step)",
    )
    run.add_argument("--wandb", default=None, metavar="PROJECT", help="also log to this Weights & Biases project")
    run.add_argument(
        "--wandb-mode",
        default=None,
        choices=("online", "offline", "disabled"),
        help="W&B mode (default: $WANDB_MODE, else online); offline needs no network: wandb sync later",
    )
    data = parser.add_argument_group("env and data")
    data.add_argument(
        "--env",
        default=SYNTHETIC_ENV_ID,
        help="a registered env id (default: the synthetic world; "
        "ReSearch-MuSiQue-v0 and the others play real questions)",
    )
    data.add_argument(
        "--dataset",
        default=None,
        help="a question file (FlashRAG/MuSiQue/HotpotQA/2Wiki JSONL, "
        "parquet) or a directory of split files, instead of the env's default",
    )
    data.add_argument("--corpus", default=None, help="a JsonCollection JSONL corpus instead of the env's default")
    data.add_argument(
        "--env-kwargs",
        type=json.loads,
        default=None,
        help="more env keywords as JSON, e.g. "
        "'{\"hops\": 2}' (for the synthetic env, merged over agents.training.recipe.SYNTHETIC_WORLD)",
    )
    data.add_argument("--top-k", type=int, default=None, help="passages per search (default: the env's)")
    data.add_argument("--questions", type=int, default=0, help="train on the first N questions only (0: all)")
    data.add_argument("--retriever-url", default=None, help="a retrieval service instead of the embedded BM25")
    data.add_argument("--split", default=None, help="split GRPO trains on (envs with splits; synthetic: dev)")
    evaluation = parser.add_argument_group("held-out evaluation")
    evaluation.add_argument(
        "--eval-every",
        type=int,
        default=5,
        help="greedy held-out evaluation every N iterations (and before the first; 0: never)",
    )
    evaluation.add_argument("--eval-split", default=None, help="held-out split (synthetic: test)")
    evaluation.add_argument("--eval-dataset", default=None, help="held-out question file for envs without splits")
    evaluation.add_argument("--eval-questions", type=int, default=200, help="held-out questions per evaluation")
    policy = parser.add_argument_group("policy")
    policy.add_argument("--model", default=None, help="local HF checkpoint directory (default: the tiny model)")
    warm = parser.add_argument_group(
        "warm start (written to DIR/policy before training; --no-small-vocab "
        "--no-sft-warmstart trains --model as it is)"
    )
    warm.add_argument(
        "--small-vocab",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a fresh ~0.5M-parameter model with a small BPE trained on the warm start's traces",
    )
    warm.add_argument(
        "--split-names",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train that BPE on synthetic names spelled out as syllables, so unseen names are "
        "sequences of known tokens",
    )
    warm.add_argument(
        "--sft-warmstart", action=argparse.BooleanOptionalAction, default=True, help="SFT on oracle traces before GRPO"
    )
    warm.add_argument("--sft-split", default=None, help="split the warm start imitates (synthetic: train)")
    warm.add_argument("--sft-questions", type=int, default=0, help="SFT on the first N questions (0: all)")
    warm.add_argument("--sft-epochs", type=int, default=8)
    warm.add_argument("--sft-lr", type=float, default=3e-3)
    warm.add_argument("--sft-batch-size", type=int, default=8)
    warm.add_argument("--noisy-copies", type=int, default=0, help="noisy copies of each oracle trace")
    warm.add_argument(
        "--no-search-share",
        type=float,
        default=0.5,
        help="share of SFT traces that answer at once with a wrong guess instead of searching, so "
        "that GRPO, not SFT, teaches the policy to search",
    )


def training_parser(description: str, output: str) -> argparse.ArgumentParser:
    """The parser both training scripts start from; each adds the flags of its own engine."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, output)
    add_settings_arguments(parser, recipe.SETTINGS)
    return parser


def settings_from_args(args: argparse.Namespace) -> GRPOSettings:
    return GRPOSettings(**{setting.name: getattr(args, setting.name) for setting in fields(GRPOSettings)})


def env_kwargs(args: argparse.Namespace, split: str | None = None, dataset: str | None = None) -> dict[str, Any]:
    """``gym.make`` keyword arguments of the run's env (``split``/``dataset``: of another split or a held-out
    file): ``--env-kwargs`` (over the synthetic recipe's), ``--dataset``, ``--corpus``, ``--top-k``, ``--split``
    and ``--retriever-url``."""
    kwargs: dict[str, Any] = {
        **(recipe.SYNTHETIC_WORLD if args.env == SYNTHETIC_ENV_ID else {}),
        **(args.env_kwargs or {}),
    }
    for name, value in (
        ("dataset", dataset or args.dataset),
        ("corpus", args.corpus),
        ("top_k", args.top_k),
        ("split", split or args.split),
        ("retriever_url", args.retriever_url),
    ):
        if value is not None:
            kwargs[name] = value
    return kwargs


def resolve_splits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the split defaults of envs with splits (the synthetic world; a dataset directory); refuse split flags
    where there are none, and an evaluation without held-out questions."""
    has_splits = args.env == SYNTHETIC_ENV_ID or (args.dataset is not None and Path(args.dataset).is_dir())
    if has_splits:
        args.split = args.split or ("dev" if args.env == SYNTHETIC_ENV_ID else None)
        args.sft_split = args.sft_split or ("train" if args.env == SYNTHETIC_ENV_ID else args.split)
        args.eval_split = args.eval_split or ("test" if args.eval_dataset is None else None)
    elif args.split or args.sft_split or args.eval_split:
        parser.error(
            f"--split, --sft-split and --eval-split need an env with splits ({SYNTHETIC_ENV_ID}, or "
            "--dataset DIR holding train/dev/test files); give single files with --dataset/--eval-dataset"
        )
    if args.eval_every and args.eval_split is None and args.eval_dataset is None:
        parser.error(
            f"--eval-every needs held-out questions: --eval-dataset PATH, or an env with splits "
            f"(--env {SYNTHETIC_ENV_ID} or --dataset DIR); --eval-every 0 turns evaluation off"
        )


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
    for name, low in (
        ("iterations", 1),
        ("top_k", 1),
        ("questions", 0),
        ("sft_questions", 0),
        ("noisy_copies", 0),
        ("eval_every", 0),
        ("eval_questions", 1),
        ("torch_threads", 1),
    ):
        value = getattr(args, name, None)
        if value is not None and value < low:
            parser.error(f"{_flag(name)} must be >= {low}, got {value}")
    if not 0.0 <= args.no_search_share < 1.0:
        parser.error(f"--no-search-share must be in [0, 1), got {args.no_search_share}")
    for name in ("dataset", "corpus", "model", "eval_dataset"):
        value = getattr(args, name, None)
        if value is not None and not os.path.exists(value):
            parser.error(f"{_flag(name)} {value}: no such file or directory")
    if getattr(args, "wandb", None) and importlib.util.find_spec("wandb") is None:
        parser.error("--wandb needs the wandb package: pip install wandb (it is in the [train] extra)")
    if args.model is not None and not Path(args.model).is_dir():
        parser.error(f"--model {args.model}: expected a checkpoint directory (config.json, weights, tokenizer)")
    if args.questions and args.questions < settings.prompts_per_batch:
        parser.error(
            f"--questions {args.questions} < --prompts-per-batch {settings.prompts_per_batch}: a batch "
            "draws that many distinct questions"
        )
    resolve_splits(parser, args)
    return settings
