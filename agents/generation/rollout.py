"""The multi-turn rollout engine (the ReSearch agent, and what a trainer reuses): a batch of token-level
envs advanced together, one batched generation call per turn. Token ids are carried over between turns —
each env appends only its own new text's ids — so no context is ever re-tokenised."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from agents.generation.base import Generation, GenerationBackend
from research_env.vector import BatchedSearchSteps
from wrappers import RESEARCH_MAX_TOKENS, Budget, TokenizedEnv


@dataclass
class RolloutConfig:
    """``max_new_tokens`` caps one generation call (a chunk); ``max_tokens`` the whole context, as in
    ReSearch (prompt, generated and retrieved tokens together); ``max_turns`` the chunks per episode."""

    max_new_tokens: int = 512
    max_tokens: int = RESEARCH_MAX_TOKENS
    max_turns: int | None = None


@dataclass
class Episode:
    """One finished episode: the final token observation and ``info``, every chunk, and where time went."""

    question_id: str
    observation: dict[str, Any]
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    chunks: list[Generation] = field(default_factory=list)
    generate_s: float = 0.0  # this episode's share of the batched generation calls
    env_s: float = 0.0  # its own env steps (including retrieval)

    @property
    def generated_tokens(self) -> int:
        return sum(len(chunk.token_ids) for chunk in self.chunks)


def token_env(env: gym.Env, tokenizer: Any, config: RolloutConfig) -> gym.Env:
    """Wrap a text env for the rollout: a token view with its policy mask, under the context budget."""
    return Budget(TokenizedEnv(env, tokenizer), max_tokens=config.max_tokens, max_turns=config.max_turns)


def run_episodes(
    envs: Sequence[gym.Env],
    backend: GenerationBackend,
    question_ids: Iterable[str],
    config: RolloutConfig | None = None,
) -> Iterator[Episode]:
    """Play one episode per question id over ``envs`` (from :func:`token_env`), yielding each as it ends.

    Every turn sends the contexts of all running episodes to ``backend.generate`` at once, capped by
    the tokens each budget has left, stopping at the env's stop strings and its EOS token; then steps every env
    at once (:class:`~research_env.vector.BatchedSearchSteps`), so the turn's searches make one retriever call
    per (retriever, k). A slot whose episode ended takes the next question, so the batch stays full until the
    questions run out.
    """
    config = config or RolloutConfig()
    pending = iter(question_ids)
    slots: list[_Slot | None] = [
        _Slot.start(env, qid) if (qid := next(pending, None)) is not None else None for env in envs
    ]
    with closing(BatchedSearchSteps(max_workers=len(envs))) as steps:
        while any(slots):
            indices = [i for i, slot in enumerate(slots) if slot is not None]
            running = [slots[i] for i in indices]
            caps = [
                max(1, min(config.max_new_tokens, slot.info.get("tokens_left", config.max_new_tokens)))
                for slot in running
            ]
            inner = running[0].env.unwrapped
            eos_ids = [running[0].env.get_wrapper_attr("tokenizer").convert_tokens_to_ids(inner.eos_token)]
            started = time.perf_counter()
            chunks = backend.generate(
                [slot.observation["input_ids"] for slot in running],
                max_new_tokens=caps,
                stop=inner.stop_strings,
                stop_token_ids=eos_ids,
            )
            generate_share = (time.perf_counter() - started) / len(running)
            # Every env steps at once, so the turn's searches reach the retriever as one batched call.
            started = time.perf_counter()
            results = steps.step([slot.env for slot in running], [chunk.token_ids for chunk in chunks])
            env_share = (time.perf_counter() - started) / len(running)
            for i, slot, chunk, result in zip(indices, running, chunks, results, strict=True):
                if slot.record(chunk, result, generate_s=generate_share, env_s=env_share):
                    yield slot.episode
                    qid = next(pending, None)
                    slots[i] = None if qid is None else _Slot.start(slot.env, qid)


@dataclass(eq=False)
class _Slot:
    env: gym.Env
    observation: dict[str, Any]
    info: dict[str, Any]
    episode: Episode

    @classmethod
    def start(cls, env: gym.Env, question_id: str) -> _Slot:
        started = time.perf_counter()
        observation, info = env.reset(options={"question_id": question_id})
        episode = Episode(question_id, observation, 0.0, False, False, info, env_s=time.perf_counter() - started)
        return cls(env, observation, info, episode)

    def record(self, chunk: Generation, result: tuple, *, generate_s: float, env_s: float) -> bool:
        """Take the env's answer to the chunk's ids; True when the episode ended."""
        self.observation, reward, terminated, truncated, self.info = result
        episode = self.episode
        episode.generate_s += generate_s
        episode.env_s += env_s
        episode.chunks.append(chunk)
        episode.observation, episode.info = self.observation, self.info
        episode.reward, episode.terminated, episode.truncated = float(reward), terminated, truncated
        return terminated or truncated
