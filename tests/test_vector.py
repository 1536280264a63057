"""``BatchedRetrievalVectorEnv``: one retriever call per vector step for all sub-envs' searches, with results
identical to Gymnasium's SyncVectorEnv (autoreset included)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import SyncVectorEnv

import research_env  # noqa: F401
from research_env.retrieval import shared_retriever
from research_env.vector import BatchedRetrievalVectorEnv

EOS = "<|endoftext|>"
SEARCH = "<think> look it up </think><search> {} father </search>"
ANSWER = "<think> done </think><answer> \\boxed{{{}}} </answer>" + EOS
N = 4


class Counting:
    """The shared BM25 retriever, counting the calls it receives."""

    def __init__(self) -> None:
        self.inner, self.calls = shared_retriever(), []

    @property
    def identity(self) -> str:
        return self.inner.identity

    def search(self, queries, k):
        self.calls.append(len(queries))
        return self.inner.search(queries, k)


def make_envs(cls, retriever, **kwargs):
    return cls([lambda: gym.make("ReSearch-MuSiQue-v0", retriever=retriever)] * N, **kwargs)


def script(step: int) -> tuple[str, ...]:
    """Step 0: all search; step 1: two search, one answers, one continues; step 2: everyone answers."""
    names = ("Edward Baring", "Anna Benson", "Bansaan Island", "Natalie Wood")
    if step == 0:
        return tuple(SEARCH.format(n) for n in names)
    if step == 1:
        return SEARCH.format(names[0]), "<think> partial", ANSWER.format("Henry Baring"), SEARCH.format(names[3])
    return tuple(ANSWER.format("x") for _ in names)


@pytest.mark.parametrize("autoreset_mode", [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP])
def test_one_retriever_call_per_step_and_the_same_results_as_sync(autoreset_mode):
    batched_retriever, sync_retriever = Counting(), Counting()
    batched = make_envs(BatchedRetrievalVectorEnv, batched_retriever, autoreset_mode=autoreset_mode)
    sync = make_envs(SyncVectorEnv, sync_retriever, autoreset_mode=autoreset_mode)
    assert batched.reset(seed=7)[0] == sync.reset(seed=7)[0]
    for step in range(4):
        actions = script(step % 3)
        calls_before = len(batched_retriever.calls)
        got, want = batched.step(actions), sync.step(actions)
        assert len(batched_retriever.calls) - calls_before <= 1
        assert got[0] == want[0]
        for a, b in zip(got[1:4], want[1:4], strict=True):
            np.testing.assert_array_equal(a, b)
        assert got[4]["num_searches"].tolist() == want[4]["num_searches"].tolist()
    # NEXT_STEP: env 2 answered at step 1, is reset at step 2 and alone searches at step 3
    expected = [4, 2, 1] if autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP else [4, 2, 4]
    assert batched_retriever.calls == expected and sum(expected) == len(sync_retriever.calls)
    assert batched.retriever_calls == len(batched_retriever.calls) < len(sync_retriever.calls)
    batched.close(), sync.close()


def test_a_failing_retriever_fails_the_step_of_every_searching_env():
    class Down(Counting):
        def search(self, queries, k):
            raise research_env.RetrieverError("service down")

    envs = make_envs(BatchedRetrievalVectorEnv, Down())
    envs.reset(seed=0)
    with pytest.raises(research_env.RetrieverError, match="service down"):
        envs.step(script(0))
    envs.close()


def test_sub_env_searches_outside_a_vector_step_go_straight_to_the_retriever():
    retriever = Counting()
    envs = make_envs(BatchedRetrievalVectorEnv, retriever)
    sub = envs.envs[0]
    sub.reset(seed=0)
    _, _, _, _, info = sub.step(SEARCH.format("Anna Benson"))
    assert retriever.calls == [1] and info["search"]["doc_ids"]
    assert sub.unwrapped.retriever.identity == retriever.identity
    envs.close()
