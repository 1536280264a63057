"""A synchronous vector env whose step makes ONE batched retriever call for all the searches of its sub-envs,
instead of one call per sub-env, whatever wrappers (token views, budgets, recorders) each sub-env carries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium.vector import SyncVectorEnv
from gymnasium.vector.utils import iterate

from research_env.gymnasium_private import envs_awaiting_autoreset, substituted_envs
from research_env.retrieval.base import Document, Retriever
from research_env.retrieval.grouping import search_grouped


@dataclass
class _Search:
    retriever: Retriever
    queries: list[str]
    k: int
    done: threading.Event = field(default_factory=threading.Event)
    result: list[list[Document]] | None = None
    error: BaseException | None = None


class _Round:
    """The searches of one vector step: sub-env steps run in threads and park their searches here until every
    sub-env is either parked or finished; then the vector env makes one call per (retriever, k) for them all."""

    def __init__(self, stepping: int) -> None:
        self.running = stepping
        self.parked: list[_Search] = []
        self.cond = threading.Condition()

    def park(self, search: _Search) -> list[list[Document]]:
        with self.cond:
            self.parked.append(search)
            self.running -= 1
            self.cond.notify_all()
        search.done.wait()
        if search.error is not None:
            raise search.error
        assert search.result is not None
        return search.result

    def finish(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify_all()

    def serve(self) -> int:
        """On the vector env's thread: until every sub-env step has finished, answer the parked searches in
        batched calls (a step that searches twice just takes two rounds). Returns the number of calls."""
        calls = 0
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.running == 0)
                parked, self.parked = self.parked, []
                self.running += len(parked)
            if not parked:
                return calls
            outcomes, made = search_grouped([(s.retriever, s.queries, s.k) for s in parked])
            calls += made
            for search, outcome in zip(parked, outcomes, strict=True):
                # an error is raised in each searching sub-env's step, as a direct call would raise it
                if isinstance(outcome, Exception):
                    search.error = outcome
                else:
                    search.result = outcome
                search.done.set()


class _RoundRetriever:
    """Installed as a sub-env's retriever: parks searches made inside a vector step on that step's round,
    and calls the real retriever directly otherwise."""

    def __init__(self, retriever: Retriever, local: threading.local) -> None:
        self.retriever, self.local = retriever, local

    @property
    def identity(self) -> str:
        return self.retriever.identity

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        round_: _Round | None = getattr(self.local, "round", None)
        if round_ is None:
            return self.retriever.search(queries, k)
        return round_.park(_Search(self.retriever, list(queries), k))


class BatchedSearchSteps:
    """Step several envs at once so that all the searches they make are answered together: each env steps in a
    thread of its own, its searches park on the round, and the calling thread answers them with one
    ``retriever.search`` per distinct (retriever, k). Works whatever wrappers (token views, budgets, recorders)
    the envs carry, since it reroutes the unwrapped env's retriever, not the wrappers' steps.

    The retriever itself is only called from the thread that calls :meth:`step`, so a JVM-backed one stays safe.
    ``retriever_calls`` counts the batched calls made. Used by :class:`BatchedRetrievalVectorEnv` and by the
    agents' rollout loop (one retrieval call per turn for a whole batch of episodes).
    """

    def __init__(self, max_workers: int) -> None:
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="batched-search-step")
        self.retriever_calls = 0

    def route(self, env: gym.Env) -> None:
        """Send ``env``'s searches through the rounds (once per env; ``identity`` unchanged)."""
        inner = env.unwrapped
        retriever = getattr(inner, "retriever", None)
        if retriever is None or (isinstance(retriever, _RoundRetriever) and retriever.local is self._local):
            return
        if isinstance(retriever, _RoundRetriever):  # routed by an earlier batcher: route the real one again
            retriever = retriever.retriever
        inner.retriever = _RoundRetriever(retriever, self._local)

    def step(self, envs: Sequence[gym.Env], actions: Sequence[Any]) -> list[tuple]:
        """``env.step(action)`` of each pair, made concurrently; the results in order. The first sub-env error is
        raised once every step has finished."""
        for env in envs:
            self.route(env)
        round_ = _Round(len(envs))
        futures = [
            self._pool.submit(self._step_one, env, action, round_) for env, action in zip(envs, actions, strict=True)
        ]
        self.retriever_calls += round_.serve()
        return [future.result() for future in futures]

    def _step_one(self, env: gym.Env, action: Any, round_: _Round) -> tuple:
        self._local.round = round_
        try:
            return env.step(action)
        finally:
            self._local.round = None
            round_.finish()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _Replay(gym.Wrapper):
    """Hands :class:`SyncVectorEnv` the step result computed in the batched pass, so that its autoreset logic
    (all three modes) runs unchanged; ``reset`` goes to the real env."""

    def __init__(self, env: gym.Env, result: tuple | None) -> None:
        super().__init__(env)
        self._result = result

    def step(self, action: Any) -> tuple:
        assert self._result is not None, "a sub-env was stepped that the batched pass skipped"
        return self._result


class BatchedRetrievalVectorEnv(SyncVectorEnv):
    """:class:`~gymnasium.vector.SyncVectorEnv` with batched retrieval: in each :meth:`step`, the sub-envs step
    concurrently (threads) and every search they make is answered by one ``retriever.search`` per distinct
    (retriever, k) — one call per vector step when the sub-envs share a retriever and ``top_k``, as
    ``gym.make`` envs do. Observations, rewards, infos and autoreset are exactly SyncVectorEnv's.

    The sub-env's ``unwrapped.retriever`` is replaced by a thin router (``identity`` unchanged); the retriever
    itself is only called from the thread that calls :meth:`step`, so a JVM-backed one stays safe.
    ``retriever_calls`` counts the batched calls made.

    Example:
        >>> envs = BatchedRetrievalVectorEnv([lambda: gym.make("ReSearch-MuSiQue-v0")] * 8)
        >>> obs, infos = envs.reset(seed=0)
        >>> obs, rewards, terminated, truncated, infos = envs.step(actions)  # <= 1 retriever call
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], **kwargs: Any) -> None:
        super().__init__(env_fns, **kwargs)
        self._steps = BatchedSearchSteps(max_workers=self.num_envs)
        for env in self.envs:
            self._steps.route(env)

    @property
    def retriever_calls(self) -> int:
        return self._steps.retriever_calls

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        per_env = list(iterate(self.action_space, actions))
        stepping = [i for i in range(self.num_envs) if i not in envs_awaiting_autoreset(self)]
        results = self._steps.step([self.envs[i] for i in stepping], [per_env[i] for i in stepping])
        replays = {i: _Replay(self.envs[i], result) for i, result in zip(stepping, results, strict=True)}
        with substituted_envs(self, [replays.get(i, env) for i, env in enumerate(self.envs)]):
            return super().step(actions)

    def close_extras(self, **kwargs: Any) -> None:
        self._steps.close()
        super().close_extras(**kwargs)
