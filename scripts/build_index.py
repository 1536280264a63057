"""Build a retrieval index from a JsonCollection JSONL ({"id", "contents"} per line).

Examples:
    python scripts/build_index.py --corpus corpus.jsonl --index indexes/bm25                  # pyserini BM25
    python scripts/build_index.py --corpus corpus.jsonl --index indexes/e5 --dense e5-base-v2 --kind hnsw
    python scripts/build_index.py --corpus corpus.jsonl --index indexes/bm25s --backend bm25s
Serve the result with `python scripts/serve_retriever.py --index DIR` (add --dense MODEL_PATH for a dense one).
"""

from __future__ import annotations

import argparse
import time

from research_env.retrieval import build_bm25_index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="JsonCollection JSONL")
    parser.add_argument("--index", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--dense", metavar="MODEL_PATH", help="local sentence-transformers model: build a faiss index")
    parser.add_argument("--kind", choices=("flat", "hnsw"), default="flat", help="faiss index kind (with --dense)")
    parser.add_argument("--backend", choices=("bm25", "bm25s"), default="bm25", help="sparse backend without --dense")
    parser.add_argument("--batch-size", type=int, default=256, help="passages per encoding batch (with --dense)")
    parser.add_argument("--threads", type=int, default=2, help="indexing threads (pyserini)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.dense:
        from research_env.retrieval.dense import build_dense_index

        build_dense_index(args.corpus, args.index, args.dense, kind=args.kind, batch_size=args.batch_size)
    elif args.backend == "bm25s":
        from research_env.retrieval.bm25s_retriever import build_bm25s_index

        build_bm25s_index(args.corpus, args.index)
    else:
        build_bm25_index(args.corpus, args.index, threads=args.threads)
    print(f"built {args.index} in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
