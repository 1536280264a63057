"""Evaluate an agent on multi-hop QA datasets, as in the paper's Table 2 (SPEC §7, §9).

    python scripts/evaluate.py --datasets musique,hotpotqa,2wiki,bamboogle --agent naive_rag --output runs/eval
    python scripts/evaluate.py --agent research --model runs/grpo_rllib --datasets musique --output runs/eval
    python scripts/evaluate.py --agent research --base-url http://127.0.0.1:8000/v1 --api-model ReSearch-Qwen-7B \\
        --template my_template.txt --output runs/eval

Each configuration gets its own directory DIR/<agent>_<model>_<start time>/ with results.json (per dataset: em,
f1, acc, format_ok_rate, searches_per_question, tokens), results.md, results.png, config.json and
traces/<dataset>.jsonl; a rerun of the same configuration resumes there, any other gets a new directory.
DIR/results.* are copies of the latest run's.
"""

from __future__ import annotations

import argparse

from agents.evaluation.run import AGENTS, RANDOM_MODEL_CAPS, EvalConfig, evaluate
from agents.generation.rollout import RolloutConfig

#: Caps of the research agent with a real model: ReSearch's 8,192-token budget bounds an episode.
REAL_MODEL_CAPS = {"max_new_tokens": 512, "max_turns": None}


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _turns(value: str) -> int | None:
    turns = int(value)
    if turns < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: unlimited), got {turns}")
    return turns or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--datasets",
        default="musique,hotpotqa,2wiki,bamboogle",
        help="comma-separated shipped sample names or dataset files",
    )
    parser.add_argument("--agent", default="naive_rag", choices=AGENTS)
    parser.add_argument(
        "--model",
        default=None,
        help="a local HF checkpoint, a training run directory or an RLlib checkpoint (exported "
        "once); default: the tiny RANDOM model, which only exercises the pipeline",
    )
    parser.add_argument(
        "--base-url",
        default=None,
        help="generate through an OpenAI-compatible server (vLLM, SGLang), e.g. "
        "http://127.0.0.1:8000/v1; --model then only gives the tokenizer",
    )
    parser.add_argument("--api-model", default=None, help="the model name the --base-url server serves")
    parser.add_argument(
        "--template",
        default=None,
        help="research agent's prompt: a registered name, a file or a literal string with "
        "{prompt}; str.format-escaped templates ({{ }}, as in ReSearch's code) are un-escaped",
    )
    parser.add_argument("--limit", type=_positive, default=None, help="first N questions of each dataset")
    parser.add_argument("--output", default="runs/eval", help="output directory (one subdirectory per run)")
    parser.add_argument("--corpus", default=None, help="JsonCollection JSONL to search (default: the demo corpus)")
    parser.add_argument(
        "--apply-chat",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="render prompts with the tokenizer's chat template (instruct models)",
    )
    parser.add_argument("--batch-size", type=_positive, default=16, help="episodes generated in parallel")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=_positive, default=5)
    parser.add_argument(
        "--max-new-tokens",
        type=_positive,
        default=None,
        help=f"tokens per generation call (research; default {REAL_MODEL_CAPS['max_new_tokens']}, "
        f"{RANDOM_MODEL_CAPS['max_new_tokens']} with the random default model)",
    )
    parser.add_argument(
        "--max-turns",
        type=_turns,
        default=argparse.SUPPRESS,
        help="generation calls per episode (research; default unlimited, "
        f"{RANDOM_MODEL_CAPS['max_turns']} with the random default model; 0: unlimited)",
    )
    parser.add_argument("--max-tokens", type=_positive, default=8192, help="context budget per episode (research)")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL of an LLM judge (off)")
    parser.add_argument("--judge-model", default="gpt-4o-mini")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> EvalConfig:
    """The run's configuration; a bad combination of flags exits through ``parser.error`` before anything loads."""
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not datasets:
        parser.error("--datasets is empty: name shipped samples (musique, hotpotqa, 2wiki, bamboogle) or files")
    random_model = args.model is None and args.base_url is None
    caps = RANDOM_MODEL_CAPS if random_model else REAL_MODEL_CAPS
    max_new_tokens = args.max_new_tokens or caps["max_new_tokens"]
    max_turns = args.max_turns if hasattr(args, "max_turns") else caps["max_turns"]
    try:
        return EvalConfig(
            datasets=datasets,
            agent=args.agent,
            model=args.model,
            limit=args.limit,
            corpus=args.corpus,
            apply_chat=args.apply_chat,
            batch_size=args.batch_size,
            temperature=args.temperature,
            seed=args.seed,
            top_k=args.top_k,
            rollout=RolloutConfig(
                max_new_tokens=min(max_new_tokens, args.max_tokens), max_tokens=args.max_tokens, max_turns=max_turns
            ),
            judge_url=args.judge_url,
            judge_model=args.judge_model,
            template=args.template,
            base_url=args.base_url,
            api_model=args.api_model,
        )
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(parser, args)
    results = evaluate(config, args.output, progress=not args.no_progress)
    for name, metrics in results.items():
        print(name, {k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
