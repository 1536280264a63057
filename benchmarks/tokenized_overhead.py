"""What ``TokenizedEnv`` adds to a step of the text env, on 4-search episodes with the Qwen2.5 tokenizer: the
ratio of their costs per step (reset included), measured side by side in interleaved rounds (the fastest of each).

    python benchmarks/tokenized_overhead.py [--questions 8] [--group-size 5] [--rounds 5]

Two settings of what the view has seen before. "GRPO groups": each question is played by a group of rollouts
that share the prompt and their searches (as a group's rollouts often do), so the view tokenises each prompt and
result block once. "all new": every episode has a new question and every search new passages, so every env
segment is tokenised from scratch (the worst case). Chunks come whole (a generator stopping at ``</search>``/EOS)
or streamed a few tokens at a time.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from research_env import Document, ReSearchEnv
from research_env.assets import DEMO_DATASETS
from research_env.tokenizer import build_qwen25_tokenizer, qwen25_text_encoder
from wrappers import TokenizedEnv

BODY = "A retrieved passage of about a hundred words, as DPR splits Wikipedia. " * 14
SEARCHES = 4


class QueryRetriever:
    """``k`` passages that depend only on the query (as any retriever's), so that only the env and the view are
    timed: a repeated query gives the same result block, a new one a block never seen."""

    identity = "benchmark:per-query"

    def search(self, queries: list[str], k: int) -> list[list[Document]]:
        return [[Document(f"{q}/{i}", f'"Passage {i} on {q}"\n{BODY}', 1.0) for i in range(k)] for q in queries]


def episode_texts(tag: str) -> list[str]:
    """The chunks a model would write: think-and-search per hop (queries named by ``tag``), then the answer."""
    hop = "<think> " + "I reason about what I know and what I still need to find. " * 6 + "</think>"
    chunks = [f"{hop}<search> {tag} hop {i} </search>" for i in range(SEARCHES)]
    return [*chunks, f"{hop}<answer> \\boxed{{Paris}} </answer><|endoftext|>"]


def episodes(setting: str, questions: int, group_size: int) -> list[tuple[int, list[str]]]:
    """(question index, chunk texts) per episode."""
    if setting == "GRPO groups":
        return [(q, episode_texts(f"question {q}")) for q in range(questions) for _ in range(group_size)]
    return [(e, episode_texts(f"episode {e}")) for e in range(questions * group_size)]


def play(env, plan: list[tuple[int, list]]) -> tuple[float, int]:
    """Seconds spent in reset and step over ``plan``, and the number of steps."""
    started, steps = time.perf_counter(), 0
    for index, actions in plan:
        env.reset(options={"index": index})
        for action in actions:
            env.step(action)
        steps += len(actions)
    return time.perf_counter() - started, steps


def pieces(tokenizer, texts: list[str], piece: int | None) -> list[list[int]]:
    """Token-id actions: whole chunks, or each chunk streamed ``piece`` tokens at a time."""
    chunks = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return [ids[i : i + (piece or len(ids))] for ids in chunks for i in range(0, len(ids), piece or len(ids))]


def measure(make_env: Callable[[], ReSearchEnv], tokenizer, setting: str, piece: int | None, args) -> tuple:
    plan = episodes(setting, args.questions, args.group_size)
    id_plan = [(q, pieces(tokenizer, texts, piece)) for q, texts in plan]
    text_plan = [(q, [tokenizer.decode(ids) for ids in actions]) for q, actions in id_plan]  # ASCII: pieces decode
    env_s, view_s = [], []
    for _ in range(args.rounds):  # interleaved, each on fresh envs and a fresh segment cache (a new tokenizer)
        fresh = build_qwen25_tokenizer(base=True)
        qwen25_text_encoder(fresh)  # its one-time vocabulary check (about 0.2 s per process), not timed
        s, steps = play(make_env(), text_plan)
        env_s.append(s)
        s, _ = play(TokenizedEnv(make_env(), fresh), id_plan)
        view_s.append(s)
    # The fastest round of each: other processes on a shared machine only ever add time.
    return steps // len(plan), min(env_s) / steps, min(view_s) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tokenizer = build_qwen25_tokenizer(base=True)

    def make_env() -> ReSearchEnv:
        return ReSearchEnv(dataset=DEMO_DATASETS["musique"], retriever=QueryRetriever())

    make_env().reset(seed=0)  # load the dataset once before timing
    print(
        f"{SEARCHES}-search episodes, top-5 passages of {len(BODY) + 20} characters, Qwen2.5 tokenizer; "
        f"{args.questions} questions x {args.group_size} rollouts, {args.rounds} interleaved rounds"
    )
    print("| setting | actions | steps/episode | env ms/step | TokenizedEnv ms/step | ratio |")
    print("|---|---|---|---|---|---|")
    for setting, piece in (("GRPO groups", None), ("all new", None), ("GRPO groups", 16), ("GRPO groups", 4)):
        steps, env_s, view_s = measure(make_env, tokenizer, setting, piece, args)
        actions = "whole chunks" if piece is None else f"{piece}-token pieces"
        print(f"| {setting} | {actions} | {steps} | {env_s * 1e3:.3f} | {view_s * 1e3:.3f} | {view_s / env_s:.1f}x |")
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
