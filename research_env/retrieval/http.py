"""``HTTPRetriever``: the :class:`Retriever` protocol over HTTP, for our service or any existing ReSearch
(``/batch_search``) or Search-R1 (``/retrieve``) retrieval server.

A search either returns every query's documents or raises: transient failures (connection refused, time-outs,
5xx, 429) are retried with capped exponential backoff and full jitter until the call's deadline, then raise
:class:`RetrieverUnavailable`. ReSearch's own client returned ``None`` after 5 failures and crashed later.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import httpx

from research_env.retrieval.base import Document, RetrieverError, check_k

WIRE_FORMATS = ("research", "search-r1")
_RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class RetrieverUnavailable(RetrieverError):
    """The service did not answer within the call's deadline (down, overloaded or hung)."""


class RetrieverRequestError(RetrieverError):
    """The service rejected the request (4xx) or answered something that is not a search result; retrying the
    same request cannot help."""


class HTTPRetriever:
    """Batched search against a retrieval service.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8000``.
        wire_format: ``research`` (``POST /batch_search``) or ``search-r1`` (``POST /retrieve``).
        deadline_s: wall-clock budget of one :meth:`search` call, retries and backoff included. It is the only
            budget: attempts go on until it is spent, so a service restart shorter than the deadline is ridden out.
        backoff_s, max_backoff_s: the n-th retry sleeps ``uniform(0, min(max_backoff_s, backoff_s * 2**n))``
            (full jitter, so that 64 clients of a restarted server do not retry in lock-step).
        max_batch: queries per HTTP request; a larger call is split (the service caps request size).
        max_connections: the connection pool size, shared by the threads that use this client.

    Example:
        >>> retriever = HTTPRetriever("http://127.0.0.1:8000")
        >>> env = gym.make("ReSearch-MuSiQue-v0", retriever=retriever)
    """

    def __init__(
        self,
        url: str,
        wire_format: str = "research",
        deadline_s: float = 30.0,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        max_batch: int = 1024,
        max_connections: int = 64,
    ) -> None:
        if wire_format not in WIRE_FORMATS:
            raise ValueError(f"wire_format must be one of {WIRE_FORMATS}, got {wire_format!r}")
        if deadline_s <= 0 or backoff_s <= 0 or max_backoff_s <= 0 or max_batch < 1:
            raise ValueError("deadline_s, backoff_s and max_backoff_s must be > 0, max_batch >= 1")
        self.url, self.wire_format, self.deadline_s = url.rstrip("/"), wire_format, deadline_s
        self.backoff_s, self.max_backoff_s, self.max_batch = backoff_s, max_backoff_s, max_batch
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.Client(base_url=self.url, limits=limits, timeout=deadline_s)

    @property
    def identity(self) -> str:
        return f"http:{self.wire_format}:{self.url}"

    def search(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        check_k(k)
        deadline = time.monotonic() + self.deadline_s
        results: list[list[Document]] = []
        for start in range(0, len(queries), self.max_batch):
            chunk = list(queries[start : start + self.max_batch])
            if self.wire_format == "research":
                body = self._post("/batch_search", {"query": chunk, "top_n": k, "return_score": True}, deadline)
                results += _parse_research(body, len(chunk))
            else:
                body = self._post("/retrieve", {"queries": chunk, "topk": k, "return_scores": True}, deadline)
                results += _parse_search_r1(body, len(chunk))
        return results

    def health(self) -> dict[str, Any]:
        """The service's ``GET /health`` (ours only), with the same retries and deadline as a search."""
        return self._request("GET", "/health", None, time.monotonic() + self.deadline_s)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HTTPRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, payload: dict[str, Any], deadline: float) -> Any:
        return self._request("POST", path, payload, deadline)

    def _request(self, method: str, path: str, payload: dict[str, Any] | None, deadline: float) -> Any:
        started, attempts, last_error = time.monotonic(), 0, "no attempt made"
        while (remaining := deadline - time.monotonic()) > 0:
            attempts += 1
            try:
                response = self._client.request(method, path, json=payload, timeout=remaining)
            except httpx.TransportError as e:  # refused, reset, timed out: the service may come back
                last_error = f"{type(e).__name__}: {e}"
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise RetrieverRequestError(
                            f"{self.url}{path} answered non-JSON: {response.text[:200]!r}"
                        ) from None
                if response.status_code not in _RETRIABLE_STATUS:
                    raise RetrieverRequestError(
                        f"{self.url}{path} rejected the request ({response.status_code}): {response.text[:500]}"
                    )
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            pause = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** min(attempts - 1, 30)))
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        waited = time.monotonic() - started
        raise RetrieverUnavailable(
            f"retrieval service {self.url}{path} did not answer within its "
            f"{self.deadline_s:.1f}s deadline: {attempts} attempts over {waited:.1f}s; "
            f"last error: {last_error}. Is scripts/serve_retriever.py running there?"
        )


def _parse_research(body: Any, n: int) -> list[list[Document]]:
    """``[docs_per_query, scores_per_query]`` with ``return_score``."""
    try:
        docs, scores = body
        if len(docs) != n or len(scores) != n:
            raise ValueError(f"{len(docs)} result lists for {n} queries")
        return [
            [
                Document(id=str(d.get("id", "")), contents=d["contents"], score=float(s))
                for d, s in zip(ds, ss, strict=True)
            ]
            for ds, ss in zip(docs, scores, strict=True)
        ]
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise RetrieverRequestError(f"not a ReSearch /batch_search answer ({e}): {str(body)[:200]}") from None


def _parse_search_r1(body: Any, n: int) -> list[list[Document]]:
    """``{"result": [[{"document": {...}, "score": s}, ...], ...]}`` with ``return_scores``."""
    try:
        results = body["result"]
        if len(results) != n:
            raise ValueError(f"{len(results)} result lists for {n} queries")
        return [
            [
                Document(
                    id=str(hit["document"].get("id", "")),
                    contents=hit["document"]["contents"],
                    score=float(hit["score"]),
                )
                for hit in hits
            ]
            for hits in results
        ]
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise RetrieverRequestError(f"not a Search-R1 /retrieve answer ({e}): {str(body)[:200]}") from None
