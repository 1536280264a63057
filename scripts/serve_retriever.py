"""Serve a retriever over HTTP with ReSearch's (/search, /batch_search) and Search-R1's (/retrieve) wire formats.

Examples:
    python scripts/serve_retriever.py --corpus corpus.jsonl --port 8000            # BM25, indexed on first use
    python scripts/serve_retriever.py --index indexes/wiki-bm25 --port 8000        # a built (or prebuilt) index
    python scripts/serve_retriever.py --index indexes/wiki-e5 --dense e5-base-v2   # dense (faiss)
    python scripts/serve_retriever.py --corpus corpus.jsonl --ray-replicas 4       # Ray Serve, 4 replicas

Request limits: a body over --max-body-bytes gets 413 (refused from its Content-Length, or as soon as the excess
arrives); more than 4,096 queries, a query over 8,192 characters, or queries over --max-request-chars characters
in all get 422, as does every malformed field (wrong type, top-k < 1, NaN, a lone surrogate); a top-k above
--max-top-k is clamped (header X-Top-K-Clamped). Large batches are searched in chunks taken round-robin with
other requests, so they never starve small ones. --index-process searches in a child process beside the server.
SIGTERM or Ctrl-C: stop accepting, finish the requests in flight (at most --drain-timeout-s), exit 0.
"""

from __future__ import annotations

import argparse

from research_env.retrieval.process import ProcessRetriever
from research_env.retrieval.service import DEFAULT_MAX_TOP_K, RequestLimits, create_app, serve
from research_env.retrieval.spec import BACKENDS, RetrieverSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="JsonCollection JSONL ({id, contents}); indexed into the cache on first use")
    source.add_argument("--index", help="an index directory built by scripts/build_index.py (or a Lucene index)")
    parser.add_argument("--dense", metavar="MODEL_PATH", help="local sentence-transformers model: serve a dense index")
    parser.add_argument("--dense-kind", choices=("flat", "hnsw"), default="flat", help="faiss index kind with --corpus")
    parser.add_argument("--backend", choices=BACKENDS, help="default: dense with --dense, else bm25 (pyserini)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=256, help="most queries per batched index call")
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="wait this long for company before an index call (default 0: dispatch at once when "
        "idle, coalesce what queued during the previous call)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="pyserini: threads of one batched index call (default 0: one per CPU)"
    )
    parser.add_argument("--max-top-k", type=int, default=DEFAULT_MAX_TOP_K, help="larger top-k is clamped to this")
    parser.add_argument(
        "--max-body-bytes", type=int, default=RequestLimits.max_body_bytes, help="larger request bodies get 413"
    )
    parser.add_argument(
        "--max-request-chars",
        type=int,
        default=RequestLimits.max_request_chars,
        help="more characters of queries in one request get 422",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=30.0,
        help="on SIGTERM/SIGINT, how long in-flight requests may take to finish",
    )
    parser.add_argument(
        "--index-process",
        action="store_true",
        help="search in a child process beside the HTTP server: the two hold different GILs, a JVM crash does "
        "not take the server down, and the micro-batcher pays the round trip once per batch (not faster on 2 "
        "cores: see the README's service benchmark)",
    )
    parser.add_argument("--ray-replicas", type=int, default=0, help="serve N replicas with Ray Serve instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    backend = args.backend or ("dense" if args.dense else "bm25")
    spec = RetrieverSpec(
        backend=backend,
        index=args.index,
        corpus=args.corpus,
        model=args.dense,
        dense_kind=args.dense_kind,
        threads=args.threads,
    )
    limits = RequestLimits(max_body_bytes=args.max_body_bytes, max_request_chars=args.max_request_chars)
    app_options = {
        "max_batch_size": args.max_batch_size,
        "max_wait_s": args.max_wait_ms / 1000,
        "max_top_k": args.max_top_k,
        "limits": limits,
    }
    if args.ray_replicas:
        from research_env.retrieval.ray_serve import run_ray_service

        run_ray_service(spec, args.ray_replicas, args.host, args.port, app_options)
        return
    retriever = ProcessRetriever(spec) if args.index_process else spec.build()
    print(f"serving {retriever.identity} on http://{args.host}:{args.port}", flush=True)
    try:
        serve(create_app(retriever, **app_options), args.host, args.port, drain_timeout_s=args.drain_timeout_s)
    finally:
        if isinstance(retriever, ProcessRetriever):
            retriever.close()


if __name__ == "__main__":
    main()
