"""A micro-batcher: coalesces concurrent search requests into batched index calls made by ONE worker thread.

One thread owns the backend, so a JVM (pyserini) or a torch encoder is only ever used from the thread
that attached it, and many callers (HTTP handlers, env threads) share one index without locks.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from research_env.retrieval.base import Document, Retriever, RetrieverError, check_k


class BatcherOverloaded(RetrieverError):
    """More queries are waiting than ``max_pending``: shed load (the service answers 503) instead of queueing
    without bound."""


class BatcherClosed(RetrieverError):
    """The batcher was closed; create a new one."""


@dataclass
class _Request:
    queries: list[str]
    k: int
    future: Future = field(default_factory=Future)


@dataclass
class BatcherStats:
    """Counters for ``/health`` and benchmarks: ``queries / index_calls`` is the coalescing factor."""

    requests: int = 0
    queries: int = 0
    index_calls: int = 0
    max_batch: int = 0


class MicroBatcher:
    """Wraps a :class:`Retriever`; is one too (``search`` blocks, ``submit`` returns a future).

    The worker takes the first waiting request, then keeps taking requests until ``max_batch_size`` queries
    are gathered or ``max_wait_s`` has passed, and makes one ``retriever.search`` per distinct ``k`` (top-k
    lists are not always prefixes of each other, e.g. for HNSW). While a batch runs, new requests queue
    up, so under load batches grow by themselves and ``max_wait_s`` only matters when the worker is idle.

    Example:
        >>> batcher = MicroBatcher(retriever, max_batch_size=256, max_wait_s=0.001)
        >>> docs = batcher.search(["who wrote hamlet"], k=5)[0]
        >>> batcher.close()
    """

    def __init__(self, retriever: Retriever, max_batch_size: int = 256, max_wait_s: float = 0.001,
                 max_pending: int = 65_536) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_pending < 1:
            raise ValueError("max_batch_size and max_pending must be >= 1 and max_wait_s >= 0")
        self.retriever = retriever
        self.max_batch_size, self.max_wait_s, self.max_pending = max_batch_size, max_wait_s, max_pending
        self.stats = BatcherStats()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="retrieval-batcher", daemon=True)
        self._worker.start()

    @property
    def identity(self) -> str:
        return self.retriever.identity

    def submit(self, queries: Sequence[str], k: int) -> Future:
        """Queue a search; the future resolves to one document list per query (or the backend's error)."""
        check_k(k)
        request = _Request(list(queries), int(k))
        with self._lock:
            if self._closed:
                raise BatcherClosed("the micro-batcher is closed")
            if self._pending + len(request.queries) > self.max_pending:
                raise BatcherOverloaded(f"{self._pending} queries are already waiting (max_pending="
                                        f"{self.max_pending}); retry later or add replicas")
            self._pending += len(request.queries)
            self.stats.requests += 1
        self._queue.put(request)
        return request.future

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        return self.submit(queries, k).result()

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish the queued requests, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._worker.join(timeout_s)

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch, stop = self._gather(first)
                self._execute(batch)
                if stop:
                    return
        finally:
            if "jnius" in sys.modules:  # pyjnius: a thread that called Java must detach before it exits
                sys.modules["jnius"].detach()

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, size = [first], len(first.queries)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch_size:
            try:
                request = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
            size += len(request.queries)
        return batch, False

    def _execute(self, batch: list[_Request]) -> None:
        by_k: dict[int, list[_Request]] = {}
        for request in batch:
            if request.future.set_running_or_notify_cancel():
                by_k.setdefault(request.k, []).append(request)
        for k, requests in by_k.items():
            queries = [q for r in requests for q in r.queries]
            try:
                results = self.retriever.search(queries, k)
                if len(results) != len(queries):
                    raise RetrieverError(f"{self.retriever.identity} returned {len(results)} result lists for "
                                         f"{len(queries)} queries")
            except Exception as e:  # delivered to every caller of this batch, never swallowed
                for r in requests:
                    r.future.set_exception(e)
            else:
                start = 0
                for r in requests:
                    r.future.set_result(results[start:start + len(r.queries)])
                    start += len(r.queries)
            with self._lock:
                self.stats.index_calls += 1
                self.stats.queries += len(queries)
                self.stats.max_batch = max(self.stats.max_batch, len(queries))
        with self._lock:
            self._pending -= sum(len(r.queries) for r in batch)
