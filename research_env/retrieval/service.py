"""The retrieval HTTP service (SPEC §4): one FastAPI app serving ReSearch's and Search-R1's wire formats
over any :class:`Retriever`, with concurrent requests coalesced into batched index calls.

Request bounds are pydantic constraints: a bad request gets a 422 naming the field, never a 500 or a hang.
A ``top_n``/``topk`` above ``max_top_k`` is clamped to it (the response carries ``X-Top-K-Clamped``),
because some pipelines ask for far more documents than they read. Empty or blank queries get no documents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from research_env.retrieval.base import Document, Retriever, RetrieverError
from research_env.retrieval.batcher import BatcherClosed, BatcherOverloaded, MicroBatcher

#: Longest query accepted (characters). LLM search queries are a sentence; 8k chars is a runaway generation.
MAX_QUERY_CHARS = 8192
#: Most queries in one request; larger batches should be split by the client (HTTPRetriever does).
MAX_BATCH_QUERIES = 4096
#: Default ceiling above which top-k is clamped.
DEFAULT_MAX_TOP_K = 100

Query = Annotated[StrictStr, Field(max_length=MAX_QUERY_CHARS)]
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


def _doc(d: Document) -> dict[str, str]:
    return {"id": d.id, "contents": d.contents}


def create_app(retriever: Retriever, max_batch_size: int = 256, max_wait_s: float = 0.001,
               max_top_k: int = DEFAULT_MAX_TOP_K, max_pending: int = 65_536) -> FastAPI:
    """The service app over ``retriever``. Its :class:`MicroBatcher` is the only caller of the retriever, from
    one thread; it starts with the app and stops at shutdown."""
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

    app = FastAPI(title="research-gym retriever", lifespan=lifespan)

    async def search(queries: list[str], k: int) -> list[list[Document]]:
        asked = [i for i, q in enumerate(queries) if q.strip()]
        results: list[list[Document]] = [[] for _ in queries]
        if asked:
            found = await asyncio.wrap_future(state["batcher"].submit([queries[i] for i in asked], min(k, max_top_k)))
            for i, docs in zip(asked, found, strict=True):
                results[i] = docs
        return results

    def respond(content: Any, k: int) -> JSONResponse:
        headers = {"X-Top-K-Clamped": str(max_top_k)} if k > max_top_k else None
        return JSONResponse(content, headers=headers)

    @app.exception_handler(BatcherOverloaded)
    async def overloaded(request: Request, exc: BatcherOverloaded) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RetrieverError)
    async def failed(request: Request, exc: RetrieverError) -> JSONResponse:
        status = 503 if isinstance(exc, BatcherClosed) else 500
        return JSONResponse({"detail": f"retriever failed: {exc}"}, status_code=status)

    @app.post("/search")
    async def search_one(body: SearchRequest) -> JSONResponse:
        docs = (await search([body.query], body.top_n))[0]
        content: Any = [[_doc(d) for d in docs], [d.score for d in docs]] if body.return_score else \
            [_doc(d) for d in docs]
        return respond(content, body.top_n)

    @app.post("/batch_search")
    async def batch_search(body: BatchSearchRequest) -> JSONResponse:
        results = await search(body.query, body.top_n)
        docs = [[_doc(d) for d in ds] for ds in results]
        content: Any = [docs, [[d.score for d in ds] for ds in results]] if body.return_score else docs
        return respond(content, body.top_n)

    @app.post("/retrieve")
    async def retrieve(body: RetrieveRequest) -> JSONResponse:
        results = await search(body.queries, body.topk)
        if body.return_scores:
            content = [[{"document": _doc(d), "score": d.score} for d in ds] for ds in results]
        else:
            content = [[_doc(d) for d in ds] for ds in results]
        return respond({"result": content}, body.topk)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "index": retriever.identity, "num_docs": getattr(retriever, "num_docs", None),
                "uptime_s": round(time.monotonic() - state["started"], 3), "max_top_k": max_top_k,
                "batcher": asdict(state["batcher"].stats)}

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn until interrupted. Access logs are off: at thousands of requests per second
    they cost more CPU than the searches."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
