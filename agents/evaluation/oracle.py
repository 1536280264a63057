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
from research_env.protocol import SEARCH_CLOSE, SEARCH_OPEN

_HOP_REFERENCE = re.compile(r"#(\d+)")


def decomposition_queries(decomposition: Sequence[dict[str, Any]]) -> list[str]:
    """Search queries from MuSiQue sub-questions: ``"#1 >> father"`` becomes ``"<answer of hop 1> father"``."""
    queries = []
    for step in decomposition:
        query = _HOP_REFERENCE.sub(lambda m: decomposition[int(m.group(1)) - 1]["answer"], step["question"])
        queries.append(" ".join(query.replace(">>", " ").split()))
    return queries


def oracle_hops(record: Any) -> list[tuple[str, str]]:
    """``(hop question, search query)`` of each gold hop of a question record; one hop, the question itself,
    when it has no decomposition."""
    hops = record.metadata.get("question_decomposition") or [{"question": record.question}]
    return [(hop["question"], query) for hop, query in zip(hops, decomposition_queries(hops), strict=True)]


def search_action(hop_question: str, query: str) -> str:
    """The oracle's chunk for one hop: a thought naming the hop, then the search."""
    return f"<think> I need to find out: {hop_question} </think>\n{SEARCH_OPEN} {query} {SEARCH_CLOSE}"


def answer_action(answer: str, eos_token: str) -> str:
    """The oracle's final chunk: the gold answer, boxed, then EOS."""
    return (
        f" <think> The passages give the answer: {answer}. </think>\n"
        f"<answer> The answer is \\boxed{{{answer}}} </answer>{eos_token}"
    )


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
    episode = OracleEpisode()
    for hop_question, query in oracle_hops(record):
        _, _, terminated, truncated, info = env.step(search_action(hop_question, query))
        if terminated or truncated:
            episode.info = info
            return episode
        episode.queries.append(query)
        episode.retrieved_ids.append(info["search"]["doc_ids"])
    _, episode.reward, _, _, episode.info = env.step(answer_action(record.golden_answers[0], env.unwrapped.eos_token))
    return episode


class OracleAgent:
    """:func:`run_oracle_episode` as an evaluation agent (one episode at a time: it generates nothing)."""

    name = "oracle"

    def run(self, envs: Sequence[gym.Env], question_ids: Sequence[str]) -> Iterator[EpisodeRecord]:
        env = envs[0]
        for qid in question_ids:
            episode = run_oracle_episode(env, qid)
            yield record_from_info(
                env,
                episode.reward,
                episode.info,
                env.unwrapped.response,
                details={"agent": self.name, "queries": episode.queries, "retrieved_ids": episode.retrieved_ids},
            )
