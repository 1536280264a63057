"""Build and query a large synthetic corpus with pyserini and bm25s: build time, index size, peak RSS, q/s.

    python benchmarks/large_corpus.py                    # 1M passages (~15 min on 2 cores, ~0.4 GB corpus)
    python benchmarks/large_corpus.py --passages 100000  # a quick check
    python benchmarks/large_corpus.py --quick --json r.json   # 20k passages, ratios bm25s / pyserini (run.py)
    python benchmarks/large_corpus.py --service --work DIR    # the service on the 1M index: 1 process vs Ray Serve

Passages are 60 words drawn from a Zipf distribution (a = 1.2) over a 50k-word vocabulary, queries 6 words the same
way (a = 1.3), seeded, as in benchmarks/retrieval.py. Each backend runs in its own process so that its peak RSS
(``ru_maxrss``: build, load and queries) is its own, and is watched: one that outgrows ``--max-rss-gib`` or the
machine's memory is stopped and reported as a row. ``--service`` starts ``scripts/serve_retriever.py`` variants on
the same index and loads them in interleaved rounds with retrieval.py's load generator. Prints one markdown table
with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import add_contract_arguments, write_result  # noqa: E402

VOCAB, WORDS_PER_PASSAGE, QUERY_WORDS, K = 50_000, 60, 6, 5
#: ``--quick``: enough passages that posting lists are not trivial, small enough to build both indexes in ~30 s.
QUICK_PASSAGES, QUICK_BUDGET_S = 20_000, 4.0


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


def interleaved(work: Path, passages: int, rounds: int, seconds: float) -> list[dict]:
    """Both backends' indexes in this process, queried in alternating rounds (the order flipped every round), so
    that a change in the machine's load hits both: each round's bm25s / pyserini ratio, per mode. Sequential runs of
    a minute each moved one backend 3x between two runs here, as the other engineers' load came and went."""
    from research_env.retrieval.bm25 import BM25Retriever
    from research_env.retrieval.bm25s_retriever import BM25SRetriever

    retrievers = {
        "pyserini": BM25Retriever(work / f"pyserini_{passages}", threads=os.cpu_count() or 1),
        "bm25s": BM25SRetriever(work / f"bm25s_{passages}"),
    }
    pool, rows = queries(20_000), []
    for mode, batch in (("single", 1), ("batch", 64)):
        for retriever in retrievers.values():  # warm-up: Lucene's JIT took seconds (short rounds flattered bm25s 3x)
            t0, i = time.perf_counter(), 0
            while time.perf_counter() - t0 < max(seconds, 2.0):
                retriever.search(pool[-batch * (i + 1) :][:batch], K)  # from the end: rounds start at the front
                i = (i + 1) % 100
        for r in range(rounds):
            qps = {}
            for name in list(retrievers) if r % 2 == 0 else list(retrievers)[::-1]:
                done, t0, start = 0, time.perf_counter(), (r * 997) % len(pool)
                while time.perf_counter() - t0 < seconds:
                    retrievers[name].search(pool[start + done : start + done + batch] or pool[:batch], K)
                    done += batch
                qps[name] = done / (time.perf_counter() - t0)
            rows.append({"mode": mode, "round": r, **qps, "load_average": list(os.getloadavg())})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_backend(backend: str, corpus: Path, index: Path, budget_s: float, reuse: bool = False) -> dict:
    """In this (child) process: build (unless ``reuse`` and the index exists: then ``build_s`` is None), load,
    query; the measurements as a dict."""
    started, build = time.perf_counter(), not (reuse and index.exists())
    if backend == "pyserini":
        from research_env.retrieval.bm25 import BM25Retriever, build_bm25_index

        if build:
            build_bm25_index(corpus, index, threads=os.cpu_count() or 1, progress=False)
        build_s = time.perf_counter() - started if build else None
        retriever = BM25Retriever(index, threads=os.cpu_count() or 1)
    else:
        from research_env.retrieval.bm25s_retriever import BM25SRetriever, build_bm25s_index

        if build:
            build_bm25s_index(corpus, index)
        build_s = time.perf_counter() - started if build else None
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


def available_bytes() -> int:
    """The kernel's estimate of memory available to new work (``MemAvailable``), other people's use included."""
    meminfo = Path("/proc/meminfo").read_text()
    return int(next(line for line in meminfo.splitlines() if line.startswith("MemAvailable")).split()[1]) * 1024


def watch(
    command: list[str], max_rss_bytes: int, min_available_bytes: int
) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run a backend's child process and poll its resident set once a second: past ``max_rss_bytes``, or when the
    machine's available memory falls under ``min_available_bytes``, it is killed, before the kernel's OOM killer
    picks a victim on a machine shared with other people's work. Returns the process, the largest resident set
    seen and the wall time."""
    started, seen = time.perf_counter(), 0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        while child.poll() is None:
            try:
                status = Path(f"/proc/{child.pid}/status").read_text()
                seen = max(seen, int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]))
            except (OSError, StopIteration, ValueError):
                pass
            available = available_bytes()
            if seen * 1024 > max_rss_bytes or available < min_available_bytes:
                child.kill()
                child.wait()
                why = (
                    f"resident set {seen / 2**20:.1f} GiB > --max-rss-gib"
                    if seen * 1024 > max_rss_bytes
                    else f"the machine's available memory {available / 2**30:.1f} GiB < --min-available-gib"
                )
                err.write(f"\nkilled by large_corpus.py: {why}\n")
                break
            time.sleep(1.0)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(command, child.returncode, out.read(), err.read())
    return done, seen * 1024, time.perf_counter() - started


def measure(
    backend: str, corpus: Path, index: Path, budget_s: float, limits: tuple[int, int], reuse: bool = False
) -> dict:
    """One backend in its own process: its measurements, or ``failed`` with why, the time it ran and the largest
    resident set seen (a backend that does not fit is a result, not a crash of the benchmark)."""
    command = [sys.executable, __file__, "--budget-s", str(budget_s), "--child", backend, str(corpus), str(index)]
    command += ["--reuse-index"] if reuse else []
    done, seen_bytes, wall_s = watch(command, *limits)
    if done.returncode == 0:
        return {"backend": backend, **json.loads(done.stdout.strip().splitlines()[-1])}
    tail = " ".join(done.stderr.strip().splitlines()[-3:])[-300:]
    return {
        "backend": backend,
        "failed": f"exit {done.returncode}: {tail}",
        "wall_s": wall_s,
        "peak_rss_bytes": seen_bytes,
    }


def table_row(r: dict, passages: int) -> tuple[str, ...]:
    if "failed" in r:
        return (
            r["backend"],
            f"{passages:,}",
            f"failed after {r['wall_s']:.0f} s ({r['failed']})",
            "-",
            f"{r['peak_rss_bytes'] / 2**30:.2f} (seen)",
            *("-",) * 4,
        )
    return (
        r["backend"],
        f"{passages:,}",
        f"{r['build_s']:.0f}" if r["build_s"] is not None else "reused",
        f"{r['index_bytes'] / 2**20:,.0f}",
        f"{r['peak_rss_bytes'] / 2**30:.2f}",
        f"{r['single_qps']:,.0f}",
        f"{r['single_p99_ms']:.1f}",
        f"{r['batch_qps']:,.0f}",
        f"{r['batch_p99_ms']:.1f}",
    )


def ratios(rows: list[dict]) -> dict[str, float]:
    """bm25s over pyserini for the build's figures on one corpus. Not q/s: measured one backend after the other,
    they moved 3x with other people's load (bm25s / pyserini 1.65x, then 0.43x, on the same 5M indexes), so q/s
    ratios come from :func:`interleaved` instead."""
    by = {r["backend"]: r for r in rows if "failed" not in r}
    if not {"pyserini", "bm25s"} <= by.keys():
        return {}
    figures = {"build s": "build_s", "index bytes": "index_bytes", "peak RSS": "peak_rss_bytes"}
    return {
        f"bm25s / pyserini {label}": by["bm25s"][key] / by["pyserini"][key]
        for label, key in figures.items()
        if by["bm25s"][key] is not None and by["pyserini"][key] is not None  # build s: None for a reused index
    }


def print_interleaved(rows: list[dict], seconds: float, load_before: tuple[float, ...]) -> dict[str, float]:
    """The interleaved table; returns bm25s / pyserini q/s per mode, the median of the rounds' ratios."""
    print(
        "| mode | pyserini q/s (mean of rounds) | bm25s q/s | bm25s / pyserini, median of rounds |\n|---|---|---|---|"
    )
    medians = {}
    for mode in ("single", "batch"):
        cells = [r for r in rows if r["mode"] == mode]
        ratio = float(np.median([r["bm25s"] / r["pyserini"] for r in cells]))
        medians[f"bm25s / pyserini q/s {mode}, median of rounds"] = ratio
        pyserini, bm25s = (np.mean([r[name] for r in cells]) for name in ("pyserini", "bm25s"))
        print(f"| {mode} | {pyserini:,.0f} | {bm25s:,.0f} | {ratio:.2f}x |")
    print(
        f"\nLoad average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{len(rows) // 2} rounds of {seconds:g} s per backend and mode, alternating; k = {K}."
    )
    return medians


def start_service(
    flags: list[str], log: Path, env: dict[str, str] | None = None, timeout_s: float = 900.0
) -> tuple[subprocess.Popen, str]:
    """``scripts/serve_retriever.py FLAGS`` on a free port, once ``/health`` answers. Its own session, so that
    :func:`stop_service` can end it and whatever it started (Ray's processes) by its process group id; a generous
    timeout, because Ray and a 1M-passage index take minutes to come up on a loaded 2-core machine."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, str(ROOT / "scripts" / "serve_retriever.py"), "--port", str(port), *flags]
    with log.open("w") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    stop_service(server)
    raise RuntimeError(f"{' '.join(command)} did not come up; the end of {log}:\n{log.read_text()[-2000:]}")


def stop_service(server: subprocess.Popen) -> None:
    """SIGINT first (Ray Serve shuts its replicas and local cluster down on it), then SIGKILL to the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def service_variants(args: argparse.Namespace, work: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The servers compared, each with its flags and environment: one process and Ray Serve replicas on the pyserini
    index (once per ``--ray-worker-niceness``: Ray renices its workers to 15 by default, which on a machine shared
    with other work, unlike the one process at 0, costs them most of the CPU), and one bm25s process when
    ``--backends`` names bm25s."""
    pyserini = ["--index", str(work / f"pyserini_{args.passages}")]
    variants = {"1 process": (pyserini, {})}
    for replicas in args.ray_replicas:
        for niceness in args.ray_worker_niceness or [None]:
            name = f"Ray Serve, {replicas} replicas" + (f", nice {niceness}" if niceness is not None else "")
            env = {"RAY_worker_niceness": str(niceness)} if niceness is not None else {}
            variants[name] = ([*pyserini, "--ray-replicas", str(replicas)], env)
    if "bm25s" in args.backends:
        variants["1 process, bm25s"] = (["--index", str(work / f"bm25s_{args.passages}"), "--backend", "bm25s"], {})
    return variants


def bench_service(args: argparse.Namespace, work: Path, corpus: Path) -> list[dict]:
    """Each variant's req/s, p50 and p99 at each client count, all servers up at once and loaded in interleaved
    rounds (the order flips every round) by retrieval.py's load generator, so that they face the same load."""
    from retrieval import load  # one query per /batch_search request, as HTTPRetriever sends them

    for backend in args.backends:  # the indexes, built by the in-process measurement if absent
        if not (work / f"{backend}_{args.passages}").exists():
            r = measure(backend, corpus, work / f"{backend}_{args.passages}", 1.0, memory_limits(args))
            if "failed" in r:
                raise RuntimeError(f"building the {backend} index failed: {r['failed']}")
    pool = queries(20_000)
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    rows = []
    try:
        for name, (flags, env) in service_variants(args, work).items():
            servers[name] = start_service(flags, work / f"service_{len(servers)}.log", env)
            print(f"{name} up at {servers[name][1]}", file=sys.stderr, flush=True)
        for _, url in servers.values():  # warm-up: JIT, caches, connections, Ray's proxy
            for clients in (1, 16):
                asyncio.run(load(url, pool, clients, 3.0))
        for clients in args.clients:
            cells: dict[str, list] = {name: [0, 0.0, [], []] for name in servers}  # requests, s, latencies, req/s
            for r in range(args.rounds):
                for name in list(servers) if r % 2 == 0 else list(servers)[::-1]:
                    n, elapsed, latencies = asyncio.run(load(servers[name][1], pool, clients, args.seconds))
                    cell = cells[name]
                    cell[0], cell[1] = cell[0] + n, cell[1] + elapsed
                    cell[2] += latencies
                    cell[3].append(n / elapsed)
            baseline = cells["1 process"][3]
            for name, (n, elapsed, latencies, per_round) in cells.items():
                p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
                rows.append(
                    {
                        "server": name,
                        "clients": clients,
                        "req_s": n / elapsed,
                        "p50_ms": float(p50),
                        "p99_ms": float(p99),
                        "median_ratio_of_rounds": float(np.median(np.divide(per_round, baseline))),
                        "load_average": list(os.getloadavg()),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for server, _ in servers.values():
            stop_service(server)
    return rows


def print_service(rows: list[dict], args: argparse.Namespace, load_before: tuple[float, ...]) -> dict[str, float]:
    """The service table; returns each variant's req/s and p99 over the single process's, per client count."""
    base = {r["clients"]: r for r in rows if r["server"] == "1 process"}
    print(
        "| server | clients | req/s | vs 1 process | median ratio of rounds | p50 ms | p99 ms | p99 vs 1 process |\n"
        f"|{'---|' * 8}"
    )
    ratios = {}
    for r in rows:
        b = base[r["clients"]]
        print(
            f"| {r['server']} | {r['clients']} | {r['req_s']:,.0f} | {r['req_s'] / b['req_s']:.2f}x | "
            f"{r['median_ratio_of_rounds']:.2f}x | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['p99_ms'] / b['p99_ms']:.2f}x |"
        )
        if r["server"] != "1 process":
            ratios[f"{r['server']} / 1 process req/s, {r['clients']} clients"] = r["median_ratio_of_rounds"]
            ratios[f"{r['server']} / 1 process p99, {r['clients']} clients"] = r["p99_ms"] / b["p99_ms"]
    load_after = os.getloadavg()
    print(
        f"\nLoad average (1, 5, 15 min) {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after; {os.cpu_count()} CPUs; {args.passages:,} passages; "
        f"{args.rounds} interleaved rounds of {args.seconds:.0f} s per cell; k = {K}, 1 query per request."
    )
    return ratios


def memory_limits(args: argparse.Namespace) -> tuple[int, int]:
    return int(args.max_rss_gib * 2**30), int(args.min_available_gib * 2**30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--backends", nargs="+", default=["pyserini", "bm25s"], choices=["pyserini", "bm25s"])
    parser.add_argument("--budget-s", type=float, default=20.0, help="query time per mode")
    parser.add_argument("--work", help="where the corpus and indexes go (default: a temporary directory)")
    parser.add_argument(
        "--max-rss-gib", type=float, default=18.0, help="kill a backend whose resident set grows past this (a row)"
    )
    parser.add_argument(
        "--min-available-gib",
        type=float,
        default=1.0,
        help="kill a backend when the machine's available memory falls under this (a row; spares others' work)",
    )
    parser.add_argument(
        "--reuse-index",
        action="store_true",
        help="query the indexes already in --work instead of building them (build s: 'reused'): both backends side by "
        "side on one corpus without hours of rebuilding",
    )
    parser.add_argument(
        "--interleave",
        type=int,
        metavar="ROUNDS",
        help="only query the indexes in --work: both backends in one process, ROUNDS alternating rounds of --budget-s",
    )
    parser.add_argument(
        "--interleave-rounds",
        type=int,
        default=4,
        help="after building both: rounds of the side-by-side q/s comparison (--budget-s in all, per backend and mode)",
    )
    parser.add_argument("--service", action="store_true", help="the HTTP service: 1 process vs Ray Serve replicas")
    parser.add_argument("--ray-replicas", type=int, nargs="+", default=[2], help="replica counts with --service")
    parser.add_argument(
        "--ray-worker-niceness",
        type=int,
        nargs="+",
        help="with --service: one Ray variant per value (RAY_worker_niceness; Ray's default is 15)",
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64], help="concurrent clients, --service")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell with --service")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round with --service")
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "CORPUS", "INDEX"), help=argparse.SUPPRESS)
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        backend, corpus, index = args.child
        print(json.dumps(run_backend(backend, Path(corpus), Path(index), args.budget_s, args.reuse_index)))
        return
    if args.quick:
        args.passages, args.budget_s = QUICK_PASSAGES, QUICK_BUDGET_S
    with tempfile.TemporaryDirectory(prefix="large_corpus_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        run(args, work)


def run(args: argparse.Namespace, work: Path) -> None:
    corpus = work / f"synthetic_{args.passages}.jsonl"
    load_before = os.getloadavg()
    if not corpus.exists():
        t = time.perf_counter()
        write_corpus(corpus, args.passages)
        print(
            f"wrote {corpus} ({corpus.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.0f}s",
            file=sys.stderr,
        )
    if args.interleave:
        rows = interleaved(work, args.passages, args.interleave, args.budget_s)
        medians = print_interleaved(rows, args.budget_s, load_before)
        write_result(args.json, "large_corpus", medians, rows)
        return
    if args.service:
        rows = bench_service(args, work, corpus)
        write_result(args.json, "large_corpus", print_service(rows, args, load_before), rows)
        return
    results = []
    for backend in args.backends:
        index = work / f"{backend}_{args.passages}"
        results.append(measure(backend, corpus, index, args.budget_s, memory_limits(args), args.reuse_index))
        results[-1]["load_average"] = list(os.getloadavg())
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(
        "| backend | passages | build s | index MiB | peak RSS GiB | q/s single | p99 ms single | q/s batch 64 | "
        f"p99 ms batch 64 |\n|{'---|' * 9}"
    )
    for r in results:
        print("| " + " | ".join(table_row(r, args.passages)) + " |")
    load_after = os.getloadavg()
    print(
        f"\nLoad average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs; "
        f"corpus {corpus.stat().st_size / 2**20:,.0f} MiB; k = {K}."
    )
    side_by_side, both, alternating = {}, ratios(results), []
    if both:  # both indexes are built: compare their q/s in alternating rounds, which the load hits alike
        seconds = args.budget_s / args.interleave_rounds
        alternating = interleaved(work, args.passages, args.interleave_rounds, seconds)
        side_by_side = print_interleaved(alternating, seconds, load_after)
    rows = [{"passages": args.passages, **r} for r in [*results, *alternating]]
    write_result(args.json, "large_corpus", both | side_by_side, rows)
    if any("failed" in r for r in results):
        sys.exit(f"failed: {', '.join(r['backend'] for r in results if 'failed' in r)}")


if __name__ == "__main__":
    main()
