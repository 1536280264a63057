"""What ``TokenizedEnv`` adds to a step of the text env, on 4-search episodes with the Qwen2.5 tokenizer: the
ratio of their CPU time per step (reset included), measured side by side in interleaved rounds (the least of each).

    python benchmarks/tokenized_overhead.py [--questions 8] [--group-size 5] [--rounds 10] [--quick] [--json PATH]

Two settings of what the view has seen before. "GRPO groups": each question is played by a group of rollouts
that share the prompt and their searches (as a group's rollouts often do), so the view tokenises each prompt and
result block once. "all new": every episode has a new question and every search new passages, so every env
segment is tokenised from scratch (the worst case). Chunks come whole (a generator stopping at ``</search>``/EOS)
or streamed a few tokens at a time. The "encode floor" is what no token view can avoid: the env step plus
Qwen2.5's tiktoken encoding of the text the env wrote (the prompt and the result blocks), timed in the same rounds.
``--quick`` (under two minutes) plays fewer questions; ``--json PATH`` also writes the table and the load average
(``benchmarks/run.py`` reads its "ratios").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from research_env import Document, ReSearchEnv
from research_env.assets import DEMO_DATASETS
from research_env.templates import PromptTemplate, resolve_template
from research_env.tokenizer import build_qwen25_tokenizer, qwen25_text_encoder
from wrappers import TokenizedEnv

BODY = "A retrieved passage of about a hundred words, as DPR splits Wikipedia. " * 14
SEARCHES = 4
QUESTIONS = 100  # in the demo MuSiQue set


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


def episodes(setting: str, questions: int, group_size: int, round_: int) -> list[tuple[int, list[str]]]:
    """(question index, chunk texts) per episode; each round's queries are its own."""
    if setting == "GRPO groups":
        return [(q, episode_texts(f"round {round_} question {q}")) for q in range(questions) for _ in range(group_size)]
    return [(e, episode_texts(f"round {round_} episode {e}")) for e in range(questions * group_size)]


def play(env, plan: list[tuple[int, list]]) -> tuple[float, int]:
    """CPU seconds of this process spent in reset and step over ``plan``, and the number of steps."""
    started, steps = time.process_time(), 0
    for index, actions in plan:
        env.reset(options={"index": index})
        for action in actions:
            env.step(action)
        steps += len(actions)
    return time.process_time() - started, steps


def pieces(tokenizer, texts: list[str], piece: int | None) -> list[list[int]]:
    """Token-id actions: whole chunks, or each chunk streamed ``piece`` tokens at a time."""
    chunks = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return [ids[i : i + (piece or len(ids))] for ids in chunks for i in range(0, len(ids), piece or len(ids))]


def env_segments(make_env: Callable[[], ReSearchEnv], text_plan: list[tuple[int, list[str]]]) -> list[str]:
    """The text the env writes over ``text_plan``: each prompt and each result block."""
    env, segments = make_env(), []
    for index, actions in text_plan:
        text, info = env.reset(options={"index": index})
        segments.append(text)
        for action in actions:
            text, *_, info = env.step(action)
        segments += [text[start:end] for start, end in info["env_spans"]]
    return segments


def round_env(round_: int) -> ReSearchEnv:
    """A fresh env whose prompts name the round: what a view cached in one round never serves the next."""
    base = resolve_template(None, apply_chat=False)
    template = PromptTemplate(f"benchmark round {round_}", f"Round {round_}. {base.text}", base.kind)
    return ReSearchEnv(dataset=DEMO_DATASETS["musique"], retriever=QueryRetriever(), template=template)


def measure(tokenizer, setting: str, piece: int | None, args) -> dict[str, Any]:
    encode = qwen25_text_encoder(tokenizer)
    env_s, view_s, encode_s = [], [], []
    for round_ in range(args.rounds):  # interleaved, on fresh envs and on prompts and queries the view has not seen
        make_env = partial(round_env, round_)
        plan = episodes(setting, args.questions, args.group_size, round_)
        id_plan = [(q, pieces(tokenizer, texts, piece)) for q, texts in plan]
        text_plan = [(q, [tokenizer.decode(ids) for ids in actions]) for q, actions in id_plan]  # ASCII text
        segments = env_segments(make_env, text_plan) if setting == "all new" else []  # a group's repeat once
        s, steps = play(make_env(), text_plan)
        env_s.append(s)
        s, _ = play(TokenizedEnv(make_env(), tokenizer), id_plan)
        view_s.append(s)
        started = time.process_time()
        for segment in segments:
            encode(segment)
        encode_s.append(time.process_time() - started)
    # CPU time, not wall time, and the least round of each: other processes on a shared machine preempt this one
    # (which wall time would count) and evict its caches (which only ever adds time).
    env_step, view_step = min(env_s) / steps, min(view_s) / steps
    return {
        "setting": setting,
        "actions": "whole chunks" if piece is None else f"{piece}-token pieces",
        "steps_per_episode": steps // len(plan),
        "env_ms_per_step": env_step * 1e3,
        "view_ms_per_step": view_step * 1e3,
        "ratio": view_step / env_step,
        "encode_floor_ratio": (min(env_s) + min(encode_s)) / steps / env_step if segments else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="4 questions and 12 rounds: under two minutes")
    parser.add_argument("--json", type=Path, help="also write the rows, ratios and load average here")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.rounds = 4, 12
    if args.questions * args.group_size > QUESTIONS:
        parser.error(f"questions x group size must be at most {QUESTIONS}, the demo set's questions")
    tokenizer = build_qwen25_tokenizer(base=True)
    qwen25_text_encoder(tokenizer)  # its one-time vocabulary check (about 0.2 s per process), not timed
    round_env(0).reset(seed=0)  # load the dataset once before timing
    print(
        f"{SEARCHES}-search episodes, top-5 passages of {len(BODY) + 20} characters, Qwen2.5 tokenizer; "
        f"{args.questions} questions x {args.group_size} rollouts, {args.rounds} interleaved rounds"
    )
    print("| setting | actions | steps/episode | env ms/step | TokenizedEnv ms/step | ratio | encode floor |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for setting, piece in (("GRPO groups", None), ("all new", None), ("GRPO groups", 16), ("GRPO groups", 4)):
        row = measure(tokenizer, setting, piece, args)
        rows.append(row)
        floor = f"{row['encode_floor_ratio']:.1f}x" if row["encode_floor_ratio"] is not None else "-"
        print(
            f"| {row['setting']} | {row['actions']} | {row['steps_per_episode']} | {row['env_ms_per_step']:.3f} "
            f"| {row['view_ms_per_step']:.3f} | {row['ratio']:.1f}x | {floor} |"
        )
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load)} on {os.cpu_count()} CPUs")
    if args.json is not None:
        whole = {row["setting"]: row["ratio"] for row in rows if row["actions"] == "whole chunks"}
        report = {
            "benchmark": "tokenized_overhead",
            "load_average": list(load),
            "ratios": {
                "wrapper/env step, GRPO groups": whole["GRPO groups"],
                "wrapper/env step, all-new": whole["all new"],
            },
            "rows": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
