"""What every agent hands the evaluation: one :class:`EpisodeRecord` per question, scored by the env's own
reward implementation, and the :class:`Agent` protocol that produces them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym

from research_env.reward import EpisodeOutcome


@dataclass
class EpisodeRecord:
    """One question's outcome, as written to the traces JSONL. ``num_searches`` counts the agent's
    retriever calls (a baseline retrieves outside the tag protocol, so the env cannot count them);
    ``details`` keeps whatever lets a reader see how the answer came about (queries, prompts); ``prompt`` is the
    env's prompt, exactly as the model saw it before its response."""

    question_id: str
    question: str
    golden_answers: list[str]
    answer: str | None
    em: float
    f1: float
    acc: float
    format_ok: bool
    reward: float
    num_searches: int
    generated_tokens: int
    response: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""


def record_from_info(
    env: gym.Env,
    reward: float,
    info: dict[str, Any],
    response: str,
    *,
    num_searches: int | None = None,
    generated_tokens: int = 0,
    details: dict[str, Any] | None = None,
) -> EpisodeRecord:
    """The record of the episode that just ended in ``env`` with final ``info``."""
    question, outcome = env.unwrapped.record, EpisodeOutcome.from_info(info)
    return EpisodeRecord(
        question_id=question.id,
        question=question.question,
        golden_answers=list(question.golden_answers),
        answer=outcome.answer,
        em=outcome.em,
        f1=outcome.f1,
        acc=outcome.acc,
        format_ok=outcome.format_ok,
        reward=float(reward),
        num_searches=int(info["num_searches"] if num_searches is None else num_searches),
        generated_tokens=generated_tokens,
        response=response,
        reason=outcome.reason,
        details=details or {},
        prompt=env.unwrapped.prompt,
    )


class Agent(Protocol):
    """Answers questions by acting in text envs (``gym.make`` ReSearch envs, one per parallel episode)."""

    name: str

    def run(self, envs: Sequence[gym.Env], question_ids: Sequence[str]) -> Iterator[EpisodeRecord]:
        """Yield one record per question id, in any order, as episodes end."""
        ...
