"""A micro-batcher: coalesces concurrent search requests into batched index calls made by ONE worker thread.

One thread owns the backend, so a JVM (pyserini) or a torch encoder is only ever used from the thread that
attached it (pyjnius objects used from several Python threads at once crash the JVM), and many callers (HTTP
handlers, env threads) share one index without locks. Large requests are cut into chunks served round-robin
with everyone else's, so a huge batch delays a small request by at most one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from research_env.retrieval.base import Document, Retriever, RetrieverError, check_k
from research_env.retrieval.grouping import search_grouped

#: Most characters of queries in one index call (unless one query alone is longer): bounds how long a huge batch
#: holds the worker between two turns of the other requests. ~40 long or ~160 typical queries.
DEFAULT_CHUNK_CHARS = 8_192


class BatcherOverloaded(RetrieverError):
    """More queries are waiting than ``max_pending``: shed load (the service answers 503) instead of queueing
    without bound."""


class BatcherClosed(RetrieverError):
    """The batcher was closed; create a new one."""


@dataclass(eq=False)
class _Request:
    """One caller's queries, cut into chunks; resolved once every chunk has been searched (or one failed)."""

    queries: list[str]
    k: int
    future: Future | asyncio.Future
    loop: asyncio.AbstractEventLoop | None
    chunks: deque[tuple[int, int]]
    results: list[list[Document]] = field(default_factory=list)
    unfinished: int = 0
    error: BaseException | None = None

    def cancelled(self) -> bool:
        return self.future.cancelled() or self.error is not None


@dataclass
class BatcherStats:
    """Counters for ``/health`` and benchmarks: ``queries / index_calls`` is the coalescing factor."""

    requests: int = 0
    queries: int = 0
    index_calls: int = 0
    max_batch: int = 0


def _chunks(queries: Sequence[str], max_queries: int, max_chars: int) -> deque[tuple[int, int]]:
    """``(start, end)`` slices of at most ``max_queries`` queries and (unless one query alone is longer)
    ``max_chars`` characters."""
    chunks: deque[tuple[int, int]] = deque()
    start, chars = 0, 0
    for i, query in enumerate(queries):
        if i > start and (i - start >= max_queries or chars + len(query) > max_chars):
            chunks.append((start, i))
            start, chars = i, 0
        chars += len(query)
    if start < len(queries):
        chunks.append((start, len(queries)))
    return chunks


class MicroBatcher:
    """Wraps a :class:`Retriever`; is one too (``search`` blocks, ``submit`` returns a future, ``submit_async``
    an asyncio future of the running loop).

    Adaptive batching: when the worker is idle a request is dispatched at once; what queued while an index call
    ran is coalesced into the next call (up to ``max_batch_size`` queries, one call per distinct ``k``). So
    batches grow with load and a lone request never waits for company. ``max_wait_s > 0`` restores a fixed wait
    for company, which only pays off with backends whose batched calls are much cheaper than single ones.

    Example:
        >>> batcher = MicroBatcher(retriever, max_batch_size=256)
        >>> docs = batcher.search(["who wrote hamlet"], k=5)[0]
        >>> batcher.close()
    """

    def __init__(
        self,
        retriever: Retriever,
        max_batch_size: int = 256,
        max_wait_s: float = 0.0,
        max_pending: int = 65_536,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_pending < 1 or chunk_chars < 1:
            raise ValueError("max_batch_size, max_pending and chunk_chars must be >= 1 and max_wait_s >= 0")
        self.retriever = retriever
        self.max_batch_size, self.max_wait_s, self.max_pending = max_batch_size, max_wait_s, max_pending
        self.chunk_chars = chunk_chars
        self.stats = BatcherStats()
        self._active: deque[_Request] = deque()  # requests with chunks not yet taken, in round-robin order
        self._pending = 0
        self._closed = False
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="retrieval-batcher", daemon=True)
        self._worker.start()

    @property
    def identity(self) -> str:
        return self.retriever.identity

    def submit(self, queries: Sequence[str], k: int) -> Future:
        """Queue a search; the future resolves to one document list per query (or the backend's error)."""
        future: Future = Future()
        future.set_running_or_notify_cancel()
        return self._enqueue(queries, k, future, None)

    def submit_async(self, queries: Sequence[str], k: int) -> asyncio.Future:
        """:meth:`submit` for a coroutine: an asyncio future of the running loop, resolved with one loop wake-up
        per index call however many of its requests it answered."""
        loop = asyncio.get_running_loop()
        return self._enqueue(queries, k, loop.create_future(), loop)

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        return self.submit(queries, k).result()

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the queued requests, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout_s)

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _enqueue(
        self, queries: Sequence[str], k: int, future: Future | asyncio.Future, loop: asyncio.AbstractEventLoop | None
    ) -> Future | asyncio.Future:
        check_k(k)
        queries = list(queries)
        request = _Request(
            queries,
            int(k),
            future,
            loop,
            _chunks(queries, self.max_batch_size, self.chunk_chars),
            [[] for _ in queries],
        )
        request.unfinished = len(request.chunks)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the micro-batcher is closed")
            if self._pending + len(queries) > self.max_pending:
                raise BatcherOverloaded(
                    f"{self._pending} queries are already waiting (max_pending="
                    f"{self.max_pending}); retry later or add replicas"
                )
            self.stats.requests += 1
            if not queries:
                _resolve([(request, [], None)])
                return future
            self._pending += len(queries)
            self._active.append(request)
            self._cond.notify()
        return future

    def _run(self) -> None:
        try:
            while batch := self._next_batch():
                self._execute(batch)
        finally:
            if "jnius" in sys.modules:  # pyjnius: a thread that called Java must detach before it exits
                sys.modules["jnius"].detach()

    def _next_batch(self) -> list[tuple[_Request, int, int]]:
        """Wait for work; then take chunks round-robin. Empty only when closed and drained."""
        with self._cond:
            batch: list[tuple[_Request, int, int]] = []
            while not batch and (self._active or not self._closed):
                self._cond.wait_for(lambda: self._active or self._closed)
                batch = self._take([])  # empty when every waiting request was cancelled or had failed
            if self.max_wait_s > 0:
                deadline = time.monotonic() + self.max_wait_s
                while not self._closed and self._cond.wait(max(0.0, deadline - time.monotonic())):
                    batch = self._take(batch)
            return batch

    def _take(self, batch: list[tuple[_Request, int, int]]) -> list[tuple[_Request, int, int]]:
        """Add to ``batch`` the next chunk of each waiting request in turn, at most one per request, while the
        batch stays within ``max_batch_size`` queries and ``chunk_chars`` characters: a small request that
        arrives behind a huge one rides in the next index call, which holds at most one chunk of the huge one."""
        size = sum(end - start for _, start, end in batch)
        chars = sum(len(q) for r, start, end in batch for q in r.queries[start:end])
        taken = {id(r) for r, _, _ in batch}
        for _ in range(len(self._active)):
            request = self._active[0]
            if request.cancelled():
                self._active.popleft()
                self._pending -= sum(end - start for start, end in request.chunks)
                request.chunks.clear()
                continue
            if id(request) in taken:
                break
            start, end = request.chunks[0]
            length = sum(len(q) for q in request.queries[start:end])
            if batch and (size + end - start > self.max_batch_size or chars + length > self.chunk_chars):
                break
            self._active.popleft()
            request.chunks.popleft()
            if request.chunks:
                self._active.append(request)
            batch.append((request, start, end))
            taken.add(id(request))
            size, chars = size + end - start, chars + length
        return batch

    def _execute(self, batch: list[tuple[_Request, int, int]]) -> None:
        outcomes, calls = search_grouped([(self.retriever, r.queries[start:end], r.k) for r, start, end in batch])
        finished = []
        for (request, start, end), outcome in zip(batch, outcomes, strict=True):
            request.unfinished -= 1
            if isinstance(outcome, Exception):
                if request.error is None:
                    request.error = outcome
                    finished.append((request, None, outcome))
                continue
            request.results[start:end] = outcome
            if request.unfinished == 0 and request.error is None:
                finished.append((request, request.results, None))
        _resolve(finished)
        with self._cond:
            self._pending -= sum(end - start for _, start, end in batch)
            self.stats.index_calls += calls
            self.stats.queries += sum(end - start for _, start, end in batch)
            self.stats.max_batch = max(self.stats.max_batch, sum(end - start for _, start, end in batch))


def _resolve(finished: list[tuple[_Request, list[list[Document]] | None, BaseException | None]]) -> None:
    """Hand results to their callers: thread futures directly, asyncio futures with one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for request, result, error in finished:
        if request.loop is None:
            if error is None:
                request.future.set_result(result)
            else:
                request.future.set_exception(error)
        else:
            by_loop.setdefault(request.loop, []).append((request.future, result, error))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop was closed: nobody is waiting any more
            loop.call_soon_threadsafe(_set_all, items)


def _set_all(items: list[tuple[asyncio.Future, list[list[Document]] | None, BaseException | None]]) -> None:
    for future, result, error in items:
        if not future.done():
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
