"""Play one ReSearch episode on the shipped demo data and print the transcript and the reward.

The scripted oracle searches MuSiQue's gold sub-questions with the embedded BM25 retriever and
answers with the gold answer, so the run shows the whole protocol offline:
    python scripts/demo.py [--question-id 2hop__403712_793210] [--apply-chat]
"""

from __future__ import annotations

import argparse
import re
import textwrap

import gymnasium as gym

import research_env  # noqa: F401  (registers the env ids)
from agents.evaluation.oracle import run_oracle_episode


def shorten_results(response: str, width: int = 160) -> str:
    """Result blocks are long; show the first passage's opening so the transcript stays readable."""
    return re.sub(
        r"<result>\n(.*?)\n</result>",
        lambda m: "<result>\n" + textwrap.shorten(m.group(1), width) + "\n</result>",
        response,
        flags=re.S,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question-id", default="2hop__403712_793210")
    parser.add_argument(
        "--apply-chat",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="render the prompt with the Qwen2.5 chat template",
    )
    args = parser.parse_args(argv)
    env = gym.make("ReSearch-MuSiQue-v0", apply_chat=args.apply_chat)
    episode = run_oracle_episode(env, args.question_id)
    print(f"question: {env.unwrapped.record.question}")
    print(f"gold answers: {list(env.unwrapped.record.golden_answers)}\n")
    print(shorten_results(env.unwrapped.response))
    info = episode.info
    print(
        f"\nreward={episode.reward:.2f} f1={info['f1']:.2f} em={info['em']:.0f} format_ok={info['format_ok']} "
        f"searches={info['num_searches']} answer={info['answer']!r}"
    )


if __name__ == "__main__":
    main()
