"""An oracle for MuSiQue that searches the gold decomposition's sub-questions and answers with the
gold answer: an upper bound for the retriever and a check of the whole episode loop. Questions without a
decomposition (the other datasets) get one search for the question itself."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from agents.evaluation.records import EpisodeRecord, record_from_info

_HOP_REFERENCE = re.compile(r"#(\d+)")


def decomposition_queries(decomposition: Sequence[dict[str, Any]]) -> list[str]:
    """Search queries from MuSiQue sub-questions: ``"#1 >> father"`` becomes ``"<answer of hop 1> father"``."""
    queries = []
    for step in decomposition:
        query = _HOP_REFERENCE.sub(lambda m: decomposition[int(m.group(1)) - 1]["answer"], step["question"])
        queries.append(" ".join(query.replace(">>", " ").split()))
    return queries


@dataclass
class OracleEpisode:
    """What the oracle did: its queries, the ids of the documents each returned, and the final info."""

    queries: list[str] = field(default_factory=list)
    retrieved_ids: list[list[str]] = field(default_factory=list)
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def run_oracle_episode(env: gym.Env, question_id: str, seed: int | None = None) -> OracleEpisode:
    """Play one episode: one search per gold hop, then the gold answer in the expected format."""
    _, info = env.reset(seed=seed, options={"question_id": question_id})
    record = env.unwrapped.record  # the oracle peeks at the gold decomposition on purpose
    eos = env.unwrapped.eos_token
    episode = OracleEpisode()
    hops = record.metadata.get("question_decomposition") or [{"question": record.question}]
    for hop, query in zip(hops, decomposition_queries(hops), strict=True):
        _, _, terminated, truncated, info = env.step(
            f"<think> I need to find out: {hop['question']} </think>\n<search> {query} </search>")
        if terminated or truncated:
            episode.info = info
            return episode
        episode.queries.append(query)
        episode.retrieved_ids.append(info["search"]["doc_ids"])
    answer = record.golden_answers[0]
    _, episode.reward, _, _, episode.info = env.step(
        f" <think> The passages give the answer: {answer}. </think>\n"
        f"<answer> The answer is \\boxed{{{answer}}} </answer>{eos}")
    return episode


class OracleAgent:
    """:func:`run_oracle_episode` as an evaluation agent (one episode at a time: it generates nothing)."""

    name = "oracle"

    def run(self, envs: Sequence[gym.Env], question_ids: Sequence[str]) -> Iterator[EpisodeRecord]:
        env = envs[0]
        for qid in question_ids:
            episode = run_oracle_episode(env, qid)
            yield record_from_info(env, episode.reward, episode.info, env.unwrapped.response,
                                   details={"agent": self.name, "queries": episode.queries,
                                            "retrieved_ids": episode.retrieved_ids})
