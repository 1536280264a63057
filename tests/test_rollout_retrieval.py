"""The rollout loop batches retrieval: in each turn, every episode that searched is answered by ONE retriever
call, however many envs searched and whatever wrappers they carry (token view, budget); through the RLlib env
runner too, whose envs share one HTTP client when the config names a retrieval service."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import gymnasium as gym
import httpx
import pytest
from transformers import AutoModelForCausalLM

import research_env  # noqa: F401
from agents.generation.base import Generation
from agents.generation.rollout import RolloutConfig, run_episodes, token_env
from agents.policies.models import load_causal_lm, tiny_qwen2_path
from research_env.assets import DEMO_CORPUS
from research_env.env import ReSearchEnv
from research_env.retrieval import BM25Retriever, cached_index
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


# -- through the RLlib env runner, with a real LM ----------------------------------------------------------------

#: The searching model's chains: after the prompt's "Assistant:" and after each "</result>", one search. Its
#: opening tag ends in the token '>"' so that ">" (which ends "</result>") can lead to the next search; the closing
#: '>"' overshoots "</search>" and the backend cuts it there.
SEARCH_CHAINS = (': <search>"Edward"</search>"', '</result> <search>"')
EDWARD_SEARCHES_PER_EPISODE = 3  # max_turns below: every chunk ends with a search


def searching_model(target: Path) -> Path:
    """The tiny random model with an untied output layer that makes greedy decoding follow
    :data:`SEARCH_CHAINS` (see tests/test_vllm.py's ``scripted_model`` for why: the random model's last hidden
    state is dominated by the last token's embedding). A token reached from several tokens gets the sum of their
    embeddings as its output row."""
    lm, tokenizer = load_causal_lm(tiny_qwen2_path(), device="cpu")
    lm.config.tie_word_embeddings = False
    untied = AutoModelForCausalLM.from_config(lm.config)
    state = lm.state_dict()
    embeddings = state["model.embed_tokens.weight"]
    head = embeddings.clone()
    chains = [tokenizer.encode(text) for text in SEARCH_CHAINS]
    pairs = {pair for ids in chains for pair in zip(ids, ids[1:], strict=False)}
    for successor in {b for _, b in pairs}:
        head[successor] = 8.0 * sum(embeddings[a] for a, b in pairs if b == successor)
    untied.load_state_dict({**state, "lm_head.weight": head})
    untied.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def searching_model_path(tmp_path_factory) -> str:
    return str(searching_model(tmp_path_factory.mktemp("searching-model")))


def runner_config(model: str, env: str, env_config: dict):
    from agents.training.rllib import GRPOConfig

    return (
        GRPOConfig()
        .training(prompts_per_batch=2, group_size=2, temperature=0.0)
        .rollouts(max_new_tokens=16, max_turns=EDWARD_SEARCHES_PER_EPISODE)
        .policy(model=model)
        .environment(env=env, env_config=env_config)
    )


def plan(question_ids: list[str], groups: int, group_size: int = 2) -> list[tuple[int, str]]:
    return [(g, question_ids[g]) for g in range(groups) for _ in range(group_size)]


@pytest.fixture
def counted_env_id() -> Iterator[tuple[str, CountedRetriever]]:
    """An env id whose envs search the real embedded BM25 retriever through one :class:`CountedRetriever`.
    Registered rather than passed in ``env_config``: RLlib deep-copies the config into each runner, and a
    retriever holding a JVM searcher cannot be copied (that is why the runner takes ``retriever_url``)."""
    env_id = "ReSearch-CountedRetrieval-v0"
    retriever = CountedRetriever(gym.make("ReSearch-MuSiQue-v0").unwrapped.retriever)
    defaults = gym.spec("ReSearch-MuSiQue-v0").kwargs
    gym.register(env_id, entry_point=lambda **kwargs: ReSearchEnv(retriever=retriever, **{**defaults, **kwargs}))
    try:
        yield env_id, retriever
    finally:
        gym.registry.pop(env_id)


def test_env_runner_makes_one_retriever_call_per_turn_for_all_its_envs(searching_model_path, counted_env_id):
    from agents.training.rllib.env_runner import ReSearchEnvRunner

    env_id, retriever = counted_env_id
    runner = ReSearchEnvRunner(config=runner_config(searching_model_path, env_id, {"top_k": 2}))
    try:
        question_ids = runner.question_ids()
        first = runner.sample(plan(question_ids, groups=2))  # 4 envs
        assert retriever.calls == [4] * EDWARD_SEARCHES_PER_EPISODE
        retriever.calls.clear()
        second = runner.sample(plan(question_ids, groups=1), seed=1)  # 2 of the runner's 4 envs
        assert retriever.calls == [2] * EDWARD_SEARCHES_PER_EPISODE
    finally:
        runner.stop()
    assert len(first["trajectories"]) == 4 and len(second["trajectories"]) == 2


@pytest.fixture(scope="module")
def retrieval_service() -> Iterator[str]:
    """``scripts/serve_retriever.py`` on 127.0.0.1 over the demo corpus's index."""
    from test_service import Server

    server = Server(cached_index(DEMO_CORPUS, progress=False)).start()
    try:
        yield server.url
    finally:
        server.stop()


def test_env_runner_envs_share_one_http_client_and_each_turn_is_one_request(searching_model_path, retrieval_service):
    from agents.training.rllib.env_runner import ReSearchEnvRunner
    from research_env.retrieval.http import HTTPRetriever

    config = runner_config(searching_model_path, "ReSearch-MuSiQue-v0", {"retriever_url": retrieval_service})
    runner = ReSearchEnvRunner(config=config)
    try:
        before = httpx.get(f"{retrieval_service}/health").json()["batcher"]
        runner.sample(plan(runner.question_ids(), groups=2))
        after = httpx.get(f"{retrieval_service}/health").json()["batcher"]
        # The rollout routes each env's searches through a per-env router (research_env.vector) over the real one.
        routed = [env.unwrapped.retriever for env in runner.envs]
        clients = {id(real): real for real in (getattr(r, "retriever", r) for r in routed)}
    finally:
        runner.stop()
    assert len(routed) == 4 and len(clients) == 1 and isinstance(next(iter(clients.values())), HTTPRetriever)
    assert after["requests"] - before["requests"] == EDWARD_SEARCHES_PER_EPISODE  # one request per turn
    assert after["queries"] - before["queries"] == 4 * EDWARD_SEARCHES_PER_EPISODE
