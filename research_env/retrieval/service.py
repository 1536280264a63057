"""The retrieval HTTP service (SPEC §4): one FastAPI app serving ReSearch's and Search-R1's wire formats
over any :class:`Retriever`, with concurrent requests coalesced into batched index calls.

Every malformed request gets a 4xx whose ``detail`` names the field and the fix, never a 500 or a hang:
bodies are read up to :class:`RequestLimits` ``max_body_bytes`` (413 beyond, never buffered whole), parsed and
validated in one pass by pydantic, and bounded in queries and characters (422). A ``top_n``/``topk`` above
``max_top_k`` is clamped (the response carries ``X-Top-K-Clamped``), because some pipelines ask for far more
documents than they read. Empty or blank queries get no documents.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from research_env.retrieval.asgi import BadRequest, FastRoutesApp, Reply, json_reply
from research_env.retrieval.base import Document, Retriever, RetrieverError
from research_env.retrieval.batcher import BatcherClosed, BatcherOverloaded, MicroBatcher

#: Longest query accepted (characters). LLM search queries are a sentence; 8k chars is a runaway generation.
MAX_QUERY_CHARS = 8192
#: Most queries in one request; larger batches should be split by the client (HTTPRetriever does).
MAX_BATCH_QUERIES = 4096
#: Default ceiling above which top-k is clamped.
DEFAULT_MAX_TOP_K = 100


@dataclass(frozen=True)
class RequestLimits:
    """What one request may cost. ``max_body_bytes``: larger bodies get 413 as soon as the excess is seen
    (from ``Content-Length``, else while streaming). ``max_request_chars``: the characters of all of a
    request's queries together (422). Per query and per request counts are fixed: ``MAX_QUERY_CHARS``,
    ``MAX_BATCH_QUERIES``."""

    max_body_bytes: int = 4 << 20
    max_request_chars: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024 or self.max_request_chars < MAX_QUERY_CHARS:
            raise ValueError(f"max_body_bytes must be >= 1024 and max_request_chars >= {MAX_QUERY_CHARS}")


def _valid_unicode(query: str) -> str:
    """A lone surrogate cannot reach the index (it is not encodable) and cannot be echoed in an error."""
    if not query.isascii():
        try:
            query.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"holds a lone surrogate (U+{ord(query[e.start]):04X}) at character {e.start}; send "
                "valid Unicode (surrogates only as \\uD8xx\\uDCxx pairs)"
            ) from None
    return query


Query = Annotated[StrictStr, Field(max_length=MAX_QUERY_CHARS), AfterValidator(_valid_unicode)]
Queries = Annotated[list[Query], Field(max_length=MAX_BATCH_QUERIES)]
TopK = Annotated[StrictInt, Field(ge=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # existing clients send extra fields; ignore rather than fail


class SearchRequest(_Request):
    """ReSearch ``POST /search``."""

    query: Query
    top_n: TopK = 10
    return_score: StrictBool = False


class BatchSearchRequest(_Request):
    """ReSearch ``POST /batch_search``."""

    query: Queries
    top_n: TopK = 10
    return_score: StrictBool = False


class RetrieveRequest(_Request):
    """Search-R1 ``POST /retrieve``."""

    queries: Queries
    topk: TopK = 5
    return_scores: StrictBool = False


def parse(model: type[_Request], body: bytes) -> Any:
    """Parse and validate in one pass; a 422 naming each bad field, without echoing its value (a NaN or a lone
    surrogate in the echo would make the error response itself fail)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        problems = [
            f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}"
            for err in e.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise BadRequest(422, "invalid request: " + "; ".join(problems[:10])) from None


def check_size(queries: list[str], field: str, limits: RequestLimits) -> None:
    chars = sum(map(len, queries))
    if chars > limits.max_request_chars:
        raise BadRequest(
            422,
            f"{field}: {len(queries):,} queries of {chars:,} characters in all exceed the limit "
            f"of {limits.max_request_chars:,} characters per request (--max-request-chars); "
            "split them over several requests",
        )


def _error_reply(exc: Exception) -> Reply | None:
    """Overload sheds load (503, retry later); a failed index call is a 500 (503 once the service is stopping),
    never an empty result."""
    if isinstance(exc, BatcherOverloaded):
        return json_reply(503, {"detail": str(exc)}, {"Retry-After": "1"})
    if isinstance(exc, RetrieverError):
        return json_reply(503 if isinstance(exc, BatcherClosed) else 500, {"detail": f"retriever failed: {exc}"})
    return None


def _doc(d: Document) -> dict[str, str]:
    return {"id": d.id, "contents": d.contents}


def create_app(
    retriever: Retriever,
    max_batch_size: int = 256,
    max_wait_s: float = 0.0,
    max_top_k: int = DEFAULT_MAX_TOP_K,
    max_pending: int = 65_536,
    limits: RequestLimits = RequestLimits(),
) -> FastAPI:
    """The service app over ``retriever``. Its :class:`MicroBatcher` is the only caller of the retriever, from
    one thread; it starts with the app and, at shutdown, finishes the queued requests before it stops."""
    if max_top_k < 1:
        raise ValueError(f"max_top_k must be >= 1, got {max_top_k}")
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["batcher"] = MicroBatcher(retriever, max_batch_size, max_wait_s, max_pending)
        state["started"] = time.monotonic()
        try:
            yield
        finally:
            state["batcher"].close()

    app = FastRoutesApp(
        title="research-gym retriever",
        lifespan=lifespan,
        max_body_bytes=limits.max_body_bytes,
        error_reply=_error_reply,
    )

    async def search(queries: list[str], k: int) -> list[list[Document]]:
        asked = [i for i, q in enumerate(queries) if q.strip()]
        if len(asked) == len(queries):
            return await state["batcher"].submit_async(queries, min(k, max_top_k))
        results: list[list[Document]] = [[] for _ in queries]
        if asked:
            found = await state["batcher"].submit_async([queries[i] for i in asked], min(k, max_top_k))
            for i, docs in zip(asked, found, strict=True):
                results[i] = docs
        return results

    def clamped(k: int) -> dict[str, str] | None:
        return {"X-Top-K-Clamped": str(max_top_k)} if k > max_top_k else None

    async def search_one(body: bytes) -> Reply:
        request: SearchRequest = parse(SearchRequest, body)
        docs = (await search([request.query], request.top_n))[0]
        content: Any = (
            [[_doc(d) for d in docs], [d.score for d in docs]] if request.return_score else [_doc(d) for d in docs]
        )
        return json_reply(200, content, clamped(request.top_n))

    async def batch_search(body: bytes) -> Reply:
        request: BatchSearchRequest = parse(BatchSearchRequest, body)
        check_size(request.query, "query", limits)
        results = await search(request.query, request.top_n)
        docs = [[_doc(d) for d in ds] for ds in results]
        content: Any = [docs, [[d.score for d in ds] for ds in results]] if request.return_score else docs
        return json_reply(200, content, clamped(request.top_n))

    async def retrieve(body: bytes) -> Reply:
        request: RetrieveRequest = parse(RetrieveRequest, body)
        check_size(request.queries, "queries", limits)
        results = await search(request.queries, request.topk)
        if request.return_scores:
            content = [[{"document": _doc(d), "score": d.score} for d in ds] for ds in results]
        else:
            content = [[_doc(d) for d in ds] for ds in results]
        return json_reply(200, {"result": content}, clamped(request.topk))

    # Served from the ASGI scope (see research_env.retrieval.asgi): the body is parsed and validated by `parse`
    # already, and FastAPI's middleware, routing and Request objects were 10-15% of the server's CPU under load.
    app.fast_routes.update({"/search": search_one, "/batch_search": batch_search, "/retrieve": retrieve})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "index": retriever.identity,
            "num_docs": getattr(retriever, "num_docs", None),
            "uptime_s": round(time.monotonic() - state["started"], 3),
            "max_top_k": max_top_k,
            "limits": asdict(limits) | {"max_query_chars": MAX_QUERY_CHARS, "max_queries": MAX_BATCH_QUERIES},
            "batcher": asdict(state["batcher"].stats),
        }

    return app


def serve(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning", drain_timeout_s: float = 30.0
) -> None:
    """Run ``app`` with uvicorn until SIGTERM or SIGINT, then shut down gracefully and return (exit status 0):
    stop accepting connections, let in-flight requests finish (at most ``drain_timeout_s``), stop the batcher.

    uvicorn re-raises the signal it stopped on once it has drained; the handlers installed here turn that into
    a normal exit rather than death by SIGTERM (status 143) or a KeyboardInterrupt. Access logs are off: at
    thousands of requests per second they cost more CPU than the searches. So is uvicorn's proxy-headers
    middleware: nothing here reads the client's address, and it ran on every request.
    """
    import uvicorn

    def exit_cleanly(signum: int, frame: object) -> None:
        raise SystemExit(0)

    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, exit_cleanly)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=drain_timeout_s,
    )
    uvicorn.Server(config).run()
