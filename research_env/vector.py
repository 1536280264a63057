"""A synchronous vector env whose step makes ONE batched retriever call for all the searches of its sub-envs,
instead of one call per sub-env, whatever wrappers (token views, budgets, recorders) each sub-env carries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate

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
        self.retriever, self._local = retriever, local

    @property
    def identity(self) -> str:
        return self.retriever.identity

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        round_: _Round | None = getattr(self._local, "round", None)
        if round_ is None:
            return self.retriever.search(queries, k)
        return round_.park(_Search(self.retriever, list(queries), k))


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
        self._local = threading.local()
        self.retriever_calls = 0
        for env in self.envs:
            inner = env.unwrapped
            if hasattr(inner, "retriever"):
                inner.retriever = _RoundRetriever(inner.retriever, self._local)
        self._pool = ThreadPoolExecutor(max_workers=self.num_envs, thread_name_prefix="vector-env-step")

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        per_env = list(iterate(self.action_space, actions))
        stepping = [i for i in range(self.num_envs)
                    if not (self.autoreset_mode == AutoresetMode.NEXT_STEP and self._autoreset_envs[i])]
        round_ = _Round(len(stepping))
        futures = {i: self._pool.submit(self._step_one, i, per_env[i], round_) for i in stepping}
        self.retriever_calls += round_.serve()
        results = {i: f.result() for i, f in futures.items()}  # re-raises the first sub-env error
        envs = self.envs
        self.envs = [_Replay(env, results.get(i)) for i, env in enumerate(envs)]
        try:
            return super().step(actions)
        finally:
            self.envs = envs

    def _step_one(self, i: int, action: Any, round_: _Round) -> tuple:
        self._local.round = round_
        try:
            return self.envs[i].step(action)
        finally:
            self._local.round = None
            round_.finish()

    def close_extras(self, **kwargs: Any) -> None:
        self._pool.shutdown(wait=True)
        super().close_extras(**kwargs)
