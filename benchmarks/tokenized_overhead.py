"""What ``TokenizedEnv`` adds to a step: the Qwen2.5 tokenizer on a search-then-answer episode, fed as
whole chunks (a generator stopping at ``</search>``/EOS) and as streamed pieces of a few tokens.

    python benchmarks/tokenized_overhead.py [--episodes 20]
"""

from __future__ import annotations

import argparse
import time

from research_env import Document, ReSearchEnv
from research_env.assets import DEMO_DATASETS
from research_env.tokenizer import build_qwen25_tokenizer
from wrappers import TokenizedEnv

PASSAGE = '"Passage"\n' + "A retrieved passage of about a hundred words, as DPR splits Wikipedia. " * 14


class ConstantRetriever:
    """Five fixed passages, so that only the env and the wrapper are timed."""

    identity = "benchmark:constant"

    def search(self, queries: list[str], k: int) -> list[list[Document]]:
        return [[Document(str(i), PASSAGE, 1.0) for i in range(k)] for _ in queries]


def episode_chunks(tokenizer, searches: int) -> list[list[int]]:
    """Token ids of the chunks a model would write: think-and-search per hop, then the answer."""
    hop = "<think> " + "I reason about what I know and what I still need to find. " * 6 + "</think>"
    chunks = [f"{hop}<search> hop {i} query </search>" for i in range(searches)]
    chunks.append(f"{hop}<answer> \\boxed{{Paris}} </answer><|endoftext|>")
    return [tokenizer(c, add_special_tokens=False)["input_ids"] for c in chunks]


def split(chunks: list[list[int]], piece: int | None) -> list[list[int]]:
    """The actions a generator would send: whole chunks, or each chunk streamed ``piece`` tokens at a time."""
    return [ids[i : i + (piece or len(ids))] for ids in chunks for i in range(0, len(ids), piece or len(ids))]


def seconds_per_step(env, actions: list, episodes: int) -> float:
    started = time.perf_counter()
    for e in range(episodes):
        env.reset(options={"index": e})
        for action in actions:
            env.step(action)
    return (time.perf_counter() - started) / (episodes * len(actions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    tokenizer = build_qwen25_tokenizer(base=True)
    chunks = episode_chunks(tokenizer, searches=4)
    raw = ReSearchEnv(dataset=DEMO_DATASETS["musique"], retriever=ConstantRetriever())
    tokenized = TokenizedEnv(ReSearchEnv(dataset=DEMO_DATASETS["musique"], retriever=ConstantRetriever()), tokenizer)
    for piece in (None, 16, 4):
        actions = split(chunks, piece)
        texts = [tokenizer.decode(ids) for ids in actions]  # ASCII only, so pieces decode on their own
        raw_s = seconds_per_step(raw, texts, args.episodes)
        tok_s = seconds_per_step(tokenized, actions, args.episodes)
        label = "whole chunks" if piece is None else f"{piece}-token pieces"
        print(f"{label:>16}: {len(actions):4d} steps/episode  env {raw_s * 1e3:7.3f} ms/step  "
              f"TokenizedEnv {tok_s * 1e3:7.3f} ms/step  (+{(tok_s - raw_s) * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
