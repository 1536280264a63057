"""Evaluate an agent on multi-hop QA datasets, as in the paper's Table 2 (SPEC §7, §9).

    python scripts/evaluate.py --datasets musique,hotpotqa,2wiki,bamboogle --agent naive_rag --output runs/eval

Writes DIR/results.json (per dataset: em, f1, acc, format_ok_rate, searches_per_question, tokens),
DIR/results.md, DIR/results.png and DIR/traces/<dataset>.jsonl; a rerun skips questions already traced.
"""

from __future__ import annotations

import argparse

from agents.evaluation.run import AGENTS, EvalConfig, evaluate
from agents.generation.rollout import RolloutConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="musique,hotpotqa,2wiki,bamboogle",
                        help="comma-separated shipped sample names or dataset files")
    parser.add_argument("--agent", default="naive_rag", choices=AGENTS)
    parser.add_argument("--model", default=None, help="local HF checkpoint directory (default: the tiny model)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of each dataset")
    parser.add_argument("--output", default="runs/eval", help="output directory")
    parser.add_argument("--corpus", default=None, help="JsonCollection JSONL to search (default: the demo corpus)")
    parser.add_argument("--apply-chat", action=argparse.BooleanOptionalAction, default=False,
                        help="render prompts with the tokenizer's chat template (instruct models)")
    parser.add_argument("--batch-size", type=int, default=16, help="episodes generated in parallel")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=512, help="tokens per generation call (research)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="context budget per episode (research)")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL of an LLM judge (off)")
    parser.add_argument("--judge-model", default="gpt-4o-mini")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = EvalConfig(
        datasets=[d.strip() for d in args.datasets.split(",") if d.strip()], agent=args.agent, model=args.model,
        limit=args.limit, corpus=args.corpus, apply_chat=args.apply_chat, batch_size=args.batch_size,
        temperature=args.temperature, seed=args.seed, top_k=args.top_k,
        rollout=RolloutConfig(max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens),
        judge_url=args.judge_url, judge_model=args.judge_model)
    results = evaluate(config, args.output, progress=not args.no_progress)
    for name, metrics in results.items():
        print(name, {k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
