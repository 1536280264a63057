"""The synthetic world: a zero-argument env, the oracle and BM25 on every split, a no-search baseline at chance,
byte-identical output per seed, and properties of every generated question."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import research_env  # noqa: F401  (registers the env ids)
from agents.evaluation.oracle import decomposition_queries, run_oracle_episode
from research_env.reward import normalize_answer
from research_env.worlds import SPLITS, WorldConfig, generate_world, split_syllables
from research_env.worlds.knowledge import TYPE_SHARES
from scripts.make_synthetic import main as make_synthetic


@pytest.fixture(scope="module")
def multihop_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    make_synthetic(
        ["--seed", "3", "--hops", "1-4", "--num-questions", "40", "--num-entities", "600", "--out", str(out)]
    )
    return out


def _records(world: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (world / f"{split}.jsonl").open()]


@pytest.mark.slow  # starts the JVM and indexes a corpus
def test_zero_argument_env_plays_a_question_offline():
    env = gym.make("ReSearch-Synthetic-v0")
    check_env(env.unwrapped, skip_render_check=True)
    _, info = env.reset(seed=0)
    record = env.unwrapped.record
    assert info["question_id"].startswith("1hop__") and record.question.endswith("?")
    episode = run_oracle_episode(env, record.id)
    assert episode.reward == 1.0 and episode.info["num_searches"] == 1


def test_bad_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="hops must be 1 to 4"):
        WorldConfig(hops=5)
    with pytest.raises(ValueError, match="more entities"):
        generate_world(WorldConfig(num_questions=5000, num_entities=300))
    with pytest.raises(ValueError, match="split must be one of"):
        gym.make("ReSearch-Synthetic-v0", split="validation")
    with pytest.raises(ValueError, match="ReSearch-v0"):
        gym.make("ReSearch-Synthetic-v0", dataset="x.jsonl")


@pytest.mark.parametrize("split", SPLITS)
def test_oracle_scores_one_and_bm25_finds_every_supporting_passage(multihop_world, split):
    env = gym.make("ReSearch-v0", dataset=multihop_world / f"{split}.jsonl", corpus=multihop_world / "corpus.jsonl")
    records = {r["id"]: r for r in _records(multihop_world, split)}
    hits = hops = 0
    for qid, record in records.items():
        episode = run_oracle_episode(env, qid)
        assert episode.reward == 1.0, (qid, episode.info)
        gold = [str(step["id"]) for step in record["question_decomposition"]]
        hits += sum(g in retrieved for g, retrieved in zip(gold, episode.retrieved_ids, strict=True))
        hops += len(gold)
    assert hops > len(records)  # multi-hop questions are there
    assert hits / hops >= 0.95, f"BM25 top-5 recall of supporting passages {hits / hops:.3f}"


def test_no_search_baseline_is_at_chance(multihop_world):
    """Answering at once with the commonest training answer of the question's relation (all a policy that never
    searches can learn) scores F1 0: held-out answers are names the training split never mentions."""
    train, test = _records(multihop_world, "train"), _records(multihop_world, "test")
    prior = {}
    for relation, answers in _group(train).items():
        prior[relation] = Counter(answers).most_common(1)[0][0]
    env = gym.make("ReSearch-v0", dataset=multihop_world / "test.jsonl", corpus=multihop_world / "corpus.jsonl")
    f1 = []
    for record in test:
        env.reset(options={"question_id": record["id"]})
        guess = prior.get(record["question_decomposition"][-1]["relation"], "unknown")
        *_, info = env.step(
            f"<think> no search </think> <answer> \\boxed{{{guess}}} </answer>{env.unwrapped.eos_token}"
        )
        assert info["format_ok"] and info["num_searches"] == 0
        f1.append(info["f1"])
    assert np.mean(f1) <= 0.02
    train_text = normalize_answer((multihop_world / "train.jsonl").read_text())
    leaked = [r["answer"] for r in test if f" {normalize_answer(r['answer'])} " in f" {train_text} "]
    assert len(leaked) <= 0.05 * len(test), leaked


def _group(records: list[dict]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for r in records:
        groups.setdefault(r["question_decomposition"][-1]["relation"], []).append(r["answer"])
    return groups


def test_same_seed_same_bytes(tmp_path, multihop_world):
    args = ["--hops", "1-4", "--num-questions", "40", "--num-entities", "600"]
    make_synthetic([*args, "--seed", "3", "--out", str(tmp_path / "again")])
    make_synthetic([*args, "--seed", "4", "--out", str(tmp_path / "other")])
    for name in ("corpus.jsonl", *(f"{s}.jsonl" for s in SPLITS), "world.json"):
        assert (tmp_path / "again" / name).read_bytes() == (multihop_world / name).read_bytes(), name
    assert (tmp_path / "other" / "corpus.jsonl").read_bytes() != (multihop_world / "corpus.jsonl").read_bytes()


def test_cached_world_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_ENV_CACHE", str(tmp_path))
    from research_env.worlds import cached_world

    config = WorldConfig(seed=9, num_questions=10, num_entities=120)
    first = cached_world(config)
    stamp = (first / "corpus.jsonl").stat().st_mtime_ns
    assert cached_world(config) == first and (first / "corpus.jsonl").stat().st_mtime_ns == stamp
    assert cached_world(WorldConfig(seed=10, num_questions=10, num_entities=120)) != first


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hops=st.sampled_from([1, 2, 3, 4, (1, 4)]), num_entities=st.integers(150, 500))
def test_every_question_is_a_consistent_chain(seed, hops, num_entities):
    world = generate_world(WorldConfig(seed=seed, hops=hops, num_questions=8, num_entities=num_entities))
    names_by_split = {}
    for split, records in world.questions.items():
        assert len({r["id"] for r in records}) == len(records) == 8
        names = set()
        for r in records:
            steps = r["question_decomposition"]
            assert steps[-1]["answer"] == r["answer"] and steps[-1]["answer_type"] in TYPE_SHARES
            assert [p["idx"] for p in r["paragraphs"]] == list(range(len(r["paragraphs"])))
            assert r["paragraphs"][steps[0]["paragraph_support_idx"]]["title"] in r["question"]  # the first subject
            for k, (step, query) in enumerate(zip(steps, decomposition_queries(steps), strict=True)):
                assert (k == 0) != (f"#{k}" in step["question"])  # later hops refer to the previous answer
                paragraph = r["paragraphs"][step["paragraph_support_idx"]]
                assert paragraph["is_supporting"]
                contents = world.passages[step["id"]]
                assert contents == f'"{paragraph["title"]}"\n{paragraph["paragraph_text"]}'
                assert step["answer"] in paragraph["paragraph_text"] and paragraph["title"] in query
                names.update({paragraph["title"], step["answer"]})
            assert sum(p["is_supporting"] for p in r["paragraphs"]) == len(steps)
            for name in (n for n in names if " " not in n):
                assert split_syllables(name) is not None and "".join(split_syllables(name)) == name
        names_by_split[split] = names
    assert not names_by_split["train"] & names_by_split["test"]
    assert not names_by_split["train"] & names_by_split["dev"]
