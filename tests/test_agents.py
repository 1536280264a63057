"""Agents through the Gymnasium API: the rollout carries token ids across turns, the oracle scores 1.0 on
the shipped MuSiQue sample with BM25, and every baseline answers and is scored by the env."""

from __future__ import annotations

import gymnasium as gym
import pytest

import research_env  # noqa: F401
from agents.evaluation.baselines import IRCoT, IterRetGen, NaiveGeneration, NaiveRAG
from agents.evaluation.oracle import OracleAgent
from agents.evaluation.research_agent import ReSearchAgent
from agents.generation.hf_backend import HFBackend
from agents.generation.rollout import RolloutConfig, run_episodes, token_env
from research_env.assets import demo_dataset
from research_env.data import load_qa_dataset


@pytest.fixture(scope="module")
def backend() -> HFBackend:
    return HFBackend.from_pretrained()


@pytest.fixture(scope="module")
def question_ids() -> list[str]:
    dataset = load_qa_dataset(demo_dataset("musique"))
    return dataset.ids[:3]


@pytest.mark.slow
def test_rollout_appends_each_chunk_ids_verbatim(backend, question_ids):
    config = RolloutConfig(max_new_tokens=6, max_turns=3)
    envs = [
        token_env(gym.make("ReSearch-MuSiQue-v0", tokenizer=backend.tokenizer), backend.tokenizer, config)
        for _ in range(2)
    ]
    episodes = list(run_episodes(envs, backend, question_ids, config))
    assert sorted(e.question_id for e in episodes) == sorted(question_ids)
    for episode in episodes:
        obs = episode.observation
        generated = [t for chunk in episode.chunks for t in chunk.token_ids]
        assert [t for t, m in zip(obs["input_ids"], obs["policy_mask"], strict=True) if m] == generated
        assert episode.truncated and episode.info["truncation_reason"] == "max_turns"
        assert len(episode.chunks) == 3 and episode.generated_tokens == 18


@pytest.mark.slow
def test_oracle_agent_scores_one_on_the_musique_sample():
    dataset = load_qa_dataset(demo_dataset("musique"))
    records = list(OracleAgent().run([gym.make("ReSearch-MuSiQue-v0")], dataset.ids))
    assert len(records) == 100
    assert sum(r.f1 for r in records) / len(records) == 1.0
    assert all(r.format_ok and r.em == 1.0 and r.num_searches >= 2 for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("agent_cls,searches", [(NaiveGeneration, 0), (NaiveRAG, 1), (IterRetGen, 3), (IRCoT, None)])
def test_baselines_answer_through_the_env(backend, question_ids, agent_cls, searches):
    limits = {"max_sentence_tokens": 4, "max_searches": 2} if agent_cls is IRCoT else {}
    agent = agent_cls(backend, max_answer_tokens=4, **limits)
    envs = [gym.make("ReSearch-MuSiQue-v0", tokenizer=backend.tokenizer) for _ in range(2)]
    records = list(agent.run(envs, question_ids[:2]))
    assert [r.question_id for r in records] == question_ids[:2]
    for record in records:
        assert record.format_ok and 0.0 <= record.f1 <= 1.0 and record.generated_tokens > 0
        assert record.num_searches == searches if searches is not None else 1 <= record.num_searches <= 2


def test_research_agent_records_are_scored(backend, question_ids):
    agent = ReSearchAgent(backend, RolloutConfig(max_new_tokens=4, max_turns=2))
    records = list(agent.run([gym.make("ReSearch-MuSiQue-v0", tokenizer=backend.tokenizer)], question_ids[:1]))
    assert len(records) == 1 and records[0].generated_tokens == 8 and not records[0].format_ok
