"""Build and query a large synthetic corpus with pyserini and bm25s: build time, index size, peak RSS, q/s.

    python benchmarks/large_corpus.py                    # 1M passages (~15 min on 2 cores, ~0.4 GB corpus)
    python benchmarks/large_corpus.py --passages 100000  # a quick check

Passages are 60 words drawn from a Zipf distribution (a = 1.2) over a 50k-word vocabulary, queries 6 words the same
way (a = 1.3), seeded, as in benchmarks/retrieval.py. Each backend runs in its own process so that its peak RSS
(``ru_maxrss``: build, load and queries) is its own. Prints one markdown table with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB, WORDS_PER_PASSAGE, QUERY_WORDS, K = 50_000, 60, 6, 5


def write_corpus(path: Path, n: int, seed: int = 0, block: int = 20_000) -> None:
    """``n`` synthetic passages, drawn in blocks (one ``(block, 60)`` Zipf draw each) to stay fast and small."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(VOCAB)])
    with path.open("w") as f:
        for start in range(0, n, block):
            words = vocab[np.minimum(rng.zipf(1.2, (min(block, n - start), WORDS_PER_PASSAGE)), VOCAB) - 1]
            f.writelines(
                json.dumps({"id": f"s{start + i}", "contents": f'"Title {start + i}"\n' + " ".join(row)}) + "\n"
                for i, row in enumerate(words)
            )


def queries(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{w - 1}" for w in np.minimum(rng.zipf(1.3, QUERY_WORDS), VOCAB)) for _ in range(n)]


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_backend(backend: str, corpus: Path, index: Path, budget_s: float) -> dict:
    """In this (child) process: build, load, query; the measurements as a dict."""
    started = time.perf_counter()
    if backend == "pyserini":
        from research_env.retrieval.bm25 import BM25Retriever, build_bm25_index

        build_bm25_index(corpus, index, threads=os.cpu_count() or 1, progress=False)
        build_s = time.perf_counter() - started
        retriever = BM25Retriever(index, threads=os.cpu_count() or 1)
    else:
        from research_env.retrieval.bm25s_retriever import BM25SRetriever, build_bm25s_index

        build_bm25s_index(corpus, index)
        build_s = time.perf_counter() - started
        retriever = BM25SRetriever(index)
    result = {"build_s": build_s, "index_bytes": directory_bytes(index)}
    pool = queries(20_000)
    retriever.search(pool[:64], K)  # warm-up
    for mode, batch in (("single", 1), ("batch", 64)):
        latencies, done, t0 = [], 0, time.perf_counter()
        for start in range(0, len(pool), batch):
            t = time.perf_counter()
            retriever.search(pool[start : start + batch], K)
            latencies.append(time.perf_counter() - t)
            done += batch
            if time.perf_counter() - t0 > budget_s:
                break
        result[f"{mode}_qps"] = done / (time.perf_counter() - t0)
        result[f"{mode}_p99_ms"] = float(np.percentile(np.asarray(latencies) * 1000, 99))
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--backends", nargs="+", default=["pyserini", "bm25s"], choices=["pyserini", "bm25s"])
    parser.add_argument("--budget-s", type=float, default=20.0, help="query time per mode")
    parser.add_argument("--work", help="where the corpus and indexes go (default: a temporary directory)")
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "CORPUS", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        backend, corpus, index = args.child
        print(json.dumps(run_backend(backend, Path(corpus), Path(index), args.budget_s)))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="large_corpus_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"synthetic_{args.passages}.jsonl"
    load_before = os.getloadavg()
    if not corpus.exists():
        t = time.perf_counter()
        write_corpus(corpus, args.passages)
        print(
            f"wrote {corpus} ({corpus.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.0f}s",
            file=sys.stderr,
        )
    rows = []
    for backend in args.backends:
        index = work / f"{backend}_{args.passages}"
        out = subprocess.run(
            [sys.executable, __file__, "--budget-s", str(args.budget_s), "--child", backend, str(corpus), str(index)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{backend} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            (
                backend,
                f"{args.passages:,}",
                f"{r['build_s']:.0f}",
                f"{r['index_bytes'] / 2**20:,.0f}",
                f"{r['peak_rss_bytes'] / 2**30:.2f}",
                f"{r['single_qps']:,.0f}",
                f"{r['single_p99_ms']:.1f}",
                f"{r['batch_qps']:,.0f}",
                f"{r['batch_p99_ms']:.1f}",
            )
        )
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| backend | passages | build s | index MiB | peak RSS GiB | q/s single | p99 ms single | q/s batch 64 | "
        f"p99 ms batch 64 |\n|{'---|' * 9}"
    )
    for row in rows:
        print("| " + " | ".join(row) + " |")
    load_after = os.getloadavg()
    print(
        f"\nLoad average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs; "
        f"corpus {corpus.stat().st_size / 2**20:,.0f} MiB; k = {K}."
    )


if __name__ == "__main__":
    main()
