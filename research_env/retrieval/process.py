"""A retriever that lives in a child process (``serve_retriever.py --index-process``): the index, JVM included,
runs beside the HTTP server, so the two hold different GILs and a JVM crash leaves the server answering.

Each :meth:`ProcessRetriever.search` is one round trip over a pipe, which the service's micro-batcher pays once per
batch; on 2 cores that round trip cost about what the second GIL gained (README, service benchmark).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import threading
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection

from research_env.retrieval.base import Document, RetrieverError, check_k
from research_env.retrieval.spec import RetrieverSpec


class IndexProcessError(RetrieverError):
    """The index process could not start, or it died; the message says how."""


def _serve_index(spec: RetrieverSpec, conn: Connection) -> None:
    """The child: build the retriever, then answer ``(queries, k)`` messages until ``None`` or end of pipe."""
    # The parent owns shutdown: it drains its requests on SIGTERM/Ctrl-C, then closes the pipe, and this loop
    # ends at end of pipe. A signal to the whole process group must not kill the index under requests in flight.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        retriever = spec.build()
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", retriever.identity, getattr(retriever, "num_docs", None)))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        queries, k = message
        try:
            conn.send(("ok", retriever.search(queries, k)))
        except Exception as e:
            conn.send(("error", _picklable(e)))


def _picklable(error: Exception) -> Exception:
    """The error itself when it survives pickling (a RetrieverError does), else a RetrieverError with its text
    (pyjnius' JavaException does not)."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RetrieverError(f"{type(error).__name__}: {error}")
    return error


def _stop(conn: Connection, process: multiprocessing.process.BaseProcess, timeout_s: float = 30.0) -> None:
    """Ask the child to stop, give it ``timeout_s`` to finish its search, then kill it."""
    with contextlib.suppress(OSError):  # already gone
        conn.send(None)
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
    conn.close()


class ProcessRetriever:
    """The retriever of ``spec``, built and searched in a child process; a :class:`Retriever` itself.

    The child is spawned (it imports the main module again), so a script that makes one needs the
    ``if __name__ == "__main__":`` guard.

    Example:
        >>> retriever = ProcessRetriever(RetrieverSpec(index="indexes/wiki-bm25"))
        >>> docs = retriever.search(["who wrote hamlet"], k=5)[0]
        >>> retriever.close()
    """

    def __init__(self, spec: RetrieverSpec, start_timeout_s: float = 600.0) -> None:
        # spawn, not fork: the parent may already run threads (and a fork would copy them half-way)
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_serve_index, args=(spec, child_conn), name="retrieval-index")
        self._process.start()
        child_conn.close()  # ours is closed: the child's death reads as end of pipe here
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop, self._conn, self._process)
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise IndexProcessError(f"the index process did not start within {start_timeout_s:.0f}s")
        reply = self._receive()
        if reply[0] != "ready":
            self.close()
            raise IndexProcessError(f"the index process could not build {spec}: {reply[1]}")
        self.identity: str = reply[1]
        self.num_docs: int | None = reply[2]

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        check_k(k)
        with self._lock:  # one request on the pipe at a time: replies come back in order
            try:
                self._conn.send((list(queries), int(k)))
            except OSError as e:
                raise self._died() from e
            reply = self._receive()
        if reply[0] == "error":
            raise reply[1]
        return reply[1]

    def close(self) -> None:
        """Stop the child (it finishes the search in progress first). Also done at interpreter exit, before
        multiprocessing joins its children, so a retriever nobody closed cannot hang the exit."""
        self._finalizer()

    def _receive(self) -> tuple:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as e:
            raise self._died() from e

    def _died(self) -> IndexProcessError:
        self._process.join(1.0)
        return IndexProcessError(
            f"the index process (pid {self._process.pid}) exited with code {self._process.exitcode}; "
            "restart the service (its stderr says why the index process died)"
        )
