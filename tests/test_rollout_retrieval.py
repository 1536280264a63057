"""The rollout loop batches retrieval: in each turn, every episode that searched is answered by ONE retriever
call, however many envs searched and whatever wrappers they carry (token view, budget)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym

import research_env  # noqa: F401
from agents.generation.base import Generation
from agents.generation.rollout import RolloutConfig, run_episodes, token_env
from research_env.retrieval import BM25Retriever
from research_env.tokenizer import build_qwen25_tokenizer


class CountedRetriever:
    """The real embedded BM25 retriever, with each call's batch size recorded."""

    def __init__(self, retriever: BM25Retriever) -> None:
        self.retriever, self.calls = retriever, []

    @property
    def identity(self) -> str:
        return self.retriever.identity

    def search(self, queries: Sequence[str], k: int):
        self.calls.append(len(queries))
        return self.retriever.search(queries, k)


class SearchThenAnswer:
    """A scripted policy (the LM is not what is tested here): ``searches`` searches, then an answer and EOS."""

    def __init__(self, tokenizer, searches: int) -> None:
        self.tokenizer, self.searches = tokenizer, searches

    def generate(self, contexts, *, max_new_tokens, stop=(), stop_token_ids=None) -> list[Generation]:
        chunks = []
        for context in contexts:
            done = self.tokenizer.decode(context).count("who founded hop")
            if done < self.searches:
                text, reason = f"<think> hop {done} </think> <search> who founded hop {done} </search>", "stop"
            else:
                text, reason = "<think> done </think> <answer> \\boxed{x} </answer><|endoftext|>", "eos"
            ids = self.tokenizer.encode(text)
            chunks.append(Generation(text, ids, [-1.0] * len(ids), reason))
        return chunks


def test_each_turn_makes_one_retriever_call_for_every_episode_that_searched():
    tokenizer = build_qwen25_tokenizer(base=True)
    retriever = CountedRetriever(gym.make("ReSearch-MuSiQue-v0").unwrapped.retriever)
    config = RolloutConfig(max_new_tokens=64, max_tokens=8192)
    envs = [
        token_env(gym.make("ReSearch-MuSiQue-v0", retriever=retriever, top_k=2), tokenizer, config) for _ in range(6)
    ]
    question_ids = envs[0].unwrapped.dataset.ids[:6]
    episodes = list(run_episodes(envs, SearchThenAnswer(tokenizer, searches=3), question_ids, config))
    assert len(episodes) == 6 and all(e.info["num_searches"] == 3 and e.terminated for e in episodes)
    assert retriever.calls == [6, 6, 6]  # three turns that searched, one call each for all six episodes
    assert all(not math.isnan(e.env_s) and e.env_s > 0 for e in episodes)
