"""The retrieval service on a real uvicorn server on 127.0.0.1: both wire formats, bad input, load from 64
concurrent clients; and the micro-batcher that coalesces requests into batched index calls."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from research_env.assets import DEMO_CORPUS, DEMO_DATASETS
from research_env.retrieval import BM25Retriever, Document, RetrieverError, cached_index
from research_env.retrieval.batcher import BatcherClosed, BatcherOverloaded, MicroBatcher
from research_env.retrieval.http import HTTPRetriever

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``scripts/serve_retriever.py`` in a subprocess, killed at the end however the test ends."""

    def __init__(self, index: Path, port: int | None = None, flags: tuple[str, ...] = ()) -> None:
        self.index, self.port, self.flags = index, port or free_port(), flags
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> Server:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "serve_retriever.py"),
                "--index",
                str(self.index),
                "--port",
                str(self.port),
                *self.flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError(f"server on {self.url} not up after {timeout_s}s")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="session")
def demo_index() -> Path:
    return cached_index(DEMO_CORPUS, progress=False)


@pytest.fixture(scope="session")
def direct(demo_index: Path) -> BM25Retriever:
    return BM25Retriever(demo_index)


@pytest.fixture(scope="session")
def threaded() -> object:
    """A real BM25 index (bm25s) for the in-process micro-batcher tests, whose worker is a second thread.

    pyserini behind the batcher's worker thread is what the server subprocess above runs, so that path stays
    tested, in its own process; bm25s keeps these tests quick and independent of the JVM.
    """
    pytest.importorskip("bm25s")
    from research_env.retrieval.bm25s_retriever import BM25SRetriever

    return BM25SRetriever.from_corpus(DEMO_CORPUS)


@pytest.fixture(scope="module")
def server(demo_index: Path) -> Iterator[Server]:
    srv = Server(demo_index).start()
    yield srv
    srv.stop()


def gold_subquestions(limit: int = 120) -> list[str]:
    """Real queries: MuSiQue's gold sub-questions, "X >> father" read as "X father"."""
    queries = []
    with DEMO_DATASETS["musique"].open() as f:
        for line in f:
            for step in json.loads(line)["question_decomposition"]:
                queries.append(step["question"].replace(">>", " "))
    return queries[:limit]


def wire(docs: list[Document]) -> list[dict]:
    return [{"id": d.id, "contents": d.contents} for d in docs]


# -- both wire formats ---------------------------------------------------------------------------------------


def test_research_and_search_r1_formats_equal_a_direct_index_call(server, direct):
    queries = gold_subquestions(6)
    expected = direct.search(queries, 5)
    one = httpx.post(f"{server.url}/search", json={"query": queries[0], "top_n": 5}).json()
    assert one == wire(expected[0])
    docs, scores = httpx.post(
        f"{server.url}/search", json={"query": queries[0], "top_n": 5, "return_score": True}
    ).json()
    assert docs == wire(expected[0]) and scores == [d.score for d in expected[0]]
    assert httpx.post(f"{server.url}/batch_search", json={"query": queries, "top_n": 5}).json() == [
        wire(e) for e in expected
    ]
    docs, scores = httpx.post(
        f"{server.url}/batch_search", json={"query": queries, "top_n": 5, "return_score": True}
    ).json()
    assert docs == [wire(e) for e in expected] and scores == [[d.score for d in e] for e in expected]
    result = httpx.post(f"{server.url}/retrieve", json={"queries": queries, "topk": 5, "return_scores": True}).json()
    assert result == {
        "result": [[{"document": w, "score": d.score} for w, d in zip(wire(e), e, strict=True)] for e in expected]
    }
    assert httpx.post(f"{server.url}/retrieve", json={"queries": queries, "topk": 5}).json() == {
        "result": [wire(e) for e in expected]
    }


def test_health_names_the_index_and_counts(server, direct):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["index"] == direct.identity
    assert health["num_docs"] == direct.num_docs and health["uptime_s"] > 0
    assert health["batcher"]["queries"] >= health["batcher"]["index_calls"]


# -- bad input: 4xx or documented clamping, and the server keeps serving ------------------------------------

BAD_REQUESTS = [
    ("/search", b'{"query": "x", "top_n": 0}'),
    ("/search", b'{"query": "x", "top_n": -3}'),
    ("/search", b'{"query": "x", "top_n": "5"}'),
    ("/search", b'{"query": "x", "top_n": 2.5}'),
    ("/search", b'{"query": "x", "top_n": true}'),
    ("/search", b'{"query": 42}'),
    ("/search", b'{"query": null}'),
    ("/search", b'{"top_n": 3}'),
    ("/search", b'{"query": "x", "return_score": "yes"}'),
    ("/search", b'{"query": "' + b"a" * 100_000 + b'"}'),
    ("/batch_search", b'{"query": "not a list"}'),
    ("/batch_search", b'{"query": ["ok", 3]}'),
    ("/batch_search", json.dumps({"query": ["q"] * 10_000}).encode()),
    ("/retrieve", b'{"queries": ["x"], "topk": 0}'),
    ("/retrieve", b'{"query": ["wrong field name"]}'),
    ("/retrieve", b'{"queries": ['),
    ("/retrieve", b"[1, 2, 3]"),
    ("/retrieve", b"null"),
    ("/retrieve", b"\xff\xfe not utf-8"),
    ("/retrieve", b""),
    # values that once made the error response itself fail (500): NaN/inf, lone surrogates
    ("/search", b'{"query": "x", "top_n": NaN}'),
    ("/search", b'{"query": "x", "top_n": Infinity}'),
    ("/retrieve", b'{"queries": ["x"], "topk": -Infinity}'),
    ("/search", b'{"query": "x", "top_n": 1e400}'),
    ("/search", b'{"query": "x", "return_score": NaN}'),
    ("/search", b'{"query": "\\ud800"}'),
    ("/batch_search", b'{"query": ["ok", "lone \\udc00 low"]}'),
    ("/retrieve", b'{"queries": ["\xed\xa0\x80"]}'),
    ("/search", b'{"query": ["a list"]}'),
    ("/batch_search", b'{"query": {"a": "dict"}}'),
    ("/retrieve", json.dumps({"queries": ["w" * 8000] * 200}).encode()),  # 1.6M characters in all
]


def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(server, direct):
    with httpx.Client(base_url=server.url, headers={"content-type": "application/json"}) as client:
        for path, body in BAD_REQUESTS:
            response = client.post(path, content=body)
            assert 400 <= response.status_code < 500, (path, body[:80], response.status_code)
            assert response.json()["detail"], (path, body[:80])
        assert client.get("/nowhere").status_code == 404
        assert client.get("/search").status_code == 405
        query = gold_subquestions(1)[0]
        assert client.post("/search", json={"query": query, "top_n": 3}).json() == wire(direct.search([query], 3)[0])


def test_bodies_over_the_limit_get_413_before_they_are_read(server):
    """A declared Content-Length over the limit is refused without reading the body; a chunked body (no length)
    is refused as soon as its excess arrives, not buffered whole (a 300 MB body once cost 1.2 GB and 55 s)."""
    limit = httpx.get(f"{server.url}/health").json()["limits"]["max_body_bytes"]
    response = httpx.post(
        f"{server.url}/batch_search", content=b" " * (limit + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and f"{limit:,} bytes" in response.json()["detail"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /batch_search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        sent = 0
        try:
            while sent < 300:  # 300 MiB unless the server answers and closes first
                sock.sendall(chunk)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413") and sent < 300


def test_lone_surrogates_and_odd_numbers_never_give_a_5xx(server):
    """Fuzz: any query text a Python client can send (lone surrogates included: json.dumps escapes them) and any
    JSON value as top-k get either documents or a 4xx, and the server keeps serving."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    any_text = st.text(st.characters(exclude_categories=()), max_size=30)
    any_k = st.one_of(
        st.integers(-5, 10**20),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.text(max_size=3),
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(queries=st.lists(any_text, max_size=4), k=any_k)
    def check(queries, k):
        body = json.dumps({"query": queries, "top_n": k})
        response = client.post("/batch_search", content=body)
        assert response.status_code < 500, (queries, k, response.text)
        if response.status_code == 200:
            assert len(response.json()) == len(queries)
        else:
            assert response.json()["detail"]

    with httpx.Client(base_url=server.url, headers={"content-type": "application/json"}) as client:
        check()
        assert client.post("/search", json={"query": "Paris", "top_n": 1}).status_code == 200


def test_huge_top_k_is_clamped_and_says_so(server, direct):
    response = httpx.post(f"{server.url}/retrieve", json={"queries": ["Paris"], "topk": 10**6})
    assert response.status_code == 200 and response.headers["x-top-k-clamped"] == "100"
    assert response.json()["result"] == [wire(direct.search(["Paris"], 100)[0])]
    assert "x-top-k-clamped" not in httpx.post(f"{server.url}/retrieve", json={"queries": ["Paris"]}).headers


def test_empty_and_odd_queries_are_answered(server):
    odd = ["", "   ", "\n\t", "🎉 Zürich 苏黎世", "AND OR NOT ( ) : * ? ~ ^", "a/b/c " * 300, "\\" * 50]
    result = httpx.post(f"{server.url}/batch_search", json={"query": odd, "top_n": 3}).json()
    assert len(result) == len(odd) and result[0] == result[1] == result[2] == []


# -- load ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_64_clients_x_100_mixed_requests_all_correct(server, direct):
    """6,400 requests over /search, /batch_search and /retrieve from 64 threads, 0 errors, every answer equal
    to the direct index call; the micro-batcher must have coalesced them."""
    pool = gold_subquestions(120)
    ks = (1, 3, 5, 10)
    expected = {k: dict(zip(pool, direct.search(pool, k), strict=True)) for k in ks}
    before = httpx.get(f"{server.url}/health").json()["batcher"]
    research = HTTPRetriever(server.url, "research", deadline_s=60, max_connections=64)
    search_r1 = HTTPRetriever(server.url, "search-r1", deadline_s=60, max_connections=64)
    raw = httpx.Client(
        base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
    )

    def client(t: int) -> int:
        for j in range(100):
            k = ks[(t + j) % len(ks)]
            queries = [pool[(t * 100 + j + i * 37) % len(pool)] for i in range(1 + j % 3)]
            kind = (t + j) % 3
            if kind == 0:
                assert raw.post("/search", json={"query": queries[0], "top_n": k}).json() == wire(
                    expected[k][queries[0]]
                )
            else:
                got = (research if kind == 1 else search_r1).search(queries, k)
                assert got == [expected[k][q] for q in queries]
        return 100

    started = time.monotonic()
    with ThreadPoolExecutor(64) as executor:
        done = sum(executor.map(client, range(64)))
    elapsed = time.monotonic() - started
    after = httpx.get(f"{server.url}/health").json()["batcher"]
    assert done == 6400 and elapsed < 90
    assert after["requests"] - before["requests"] == 6400
    assert after["index_calls"] - before["index_calls"] < 6400  # coalesced
    research.close(), search_r1.close(), raw.close()


# -- the micro-batcher ----------------------------------------------------------------------------------------


class _Recording:
    """A real retriever that records the size of each call it receives."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []
        self.gate = threading.Event()
        self.gate.set()

    @property
    def identity(self) -> str:
        return self.inner.identity

    def search(self, queries, k):
        self.gate.wait(10)
        self.calls.append((len(queries), k))
        return self.inner.search(queries, k)


def test_batcher_coalesces_concurrent_requests_and_keeps_them_apart(threaded):
    recording = _Recording(threaded)
    pool = gold_subquestions(40)
    with MicroBatcher(recording, max_batch_size=64, max_wait_s=0.05) as batcher:
        recording.gate.clear()  # hold the worker so that requests pile up behind the first one
        first = batcher.submit(pool[:1], 5)
        futures = [batcher.submit([q], 5 if i % 2 else 3) for i, q in enumerate(pool[1:])]
        recording.gate.set()
        assert first.result(60) == threaded.search(pool[:1], 5)
        for i, (q, future) in enumerate(zip(pool[1:], futures, strict=True)):
            assert future.result(60) == threaded.search([q], 5 if i % 2 else 3)
        assert len(recording.calls) <= 4 and sorted({k for _, k in recording.calls}) == [3, 5]
        assert batcher.stats.requests == 40 and batcher.stats.queries == 40


def test_batcher_sends_the_backend_error_to_every_caller_and_keeps_working(threaded):
    class Failing(_Recording):
        def search(self, queries, k):
            if "explode" in queries:
                raise RetrieverError("backend failed")
            return super().search(queries, k)

    with MicroBatcher(Failing(threaded), max_wait_s=0.05) as batcher:
        futures = [batcher.submit(["explode"], 5), batcher.submit(["Paris"], 5)]
        for future in futures:
            with pytest.raises(RetrieverError, match="backend failed"):
                future.result(10)
        assert batcher.search(["Paris"], 5) == threaded.search(["Paris"], 5)


def test_batcher_keeps_working_after_a_chunked_request_fails(threaded):
    """A request cut into chunks whose first chunk fails gets the error once; its other chunks are dropped and
    the worker goes on serving (it once stopped when the only queued work was such a dropped chunk)."""

    class Failing(_Recording):
        def search(self, queries, k):
            if "explode" in queries:
                raise RetrieverError("backend failed")
            return super().search(queries, k)

    with MicroBatcher(Failing(threaded), max_batch_size=1) as batcher:
        with pytest.raises(RetrieverError, match="backend failed"):
            batcher.submit(["explode", "Paris", "Rome"], 5).result(10)
        assert batcher.submit(["Paris"], 5).result(10) == threaded.search(["Paris"], 5)


def test_batcher_sheds_load_and_refuses_after_close(threaded):
    recording = _Recording(threaded)
    batcher = MicroBatcher(recording, max_pending=4)
    recording.gate.clear()
    held = batcher.submit(["a", "b", "c"], 5)
    with pytest.raises(BatcherOverloaded, match="max_pending=4"):
        batcher.submit(["d", "e"], 5)
    recording.gate.set()
    held.result(10)
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(["x"], 5)


LONG_QUERIES = [" ".join(q for q in gold_subquestions(120)[i : i + 5]) for i in range(100)]  # ~190 characters


def wait_until_searching(url: str, before: int, sender: threading.Thread) -> None:
    """Until the request that ``sender`` sent has reached the server's batcher (its request count moved)."""
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health").json()["batcher"]["requests"] == before:
        assert sender.is_alive() and time.monotonic() < deadline, "the request never reached the index"
        time.sleep(0.01)


def test_a_huge_batch_does_not_starve_small_requests(server, direct):
    """A legal batch of 4,096 long queries runs for seconds; small searches sent meanwhile are answered within
    about one chunk's time, not after the whole batch (once 86 s behind a 92 s batch)."""
    big = {"query": [LONG_QUERIES[i % len(LONG_QUERIES)] for i in range(4096)], "top_n": 5}
    finished: dict[str, float] = {}

    def send_big() -> None:
        response = httpx.post(f"{server.url}/batch_search", json=big, timeout=300)
        assert response.status_code == 200 and len(response.json()) == 4096
        finished["big"] = time.monotonic()

    before = httpx.get(f"{server.url}/health").json()["batcher"]["requests"]
    started = time.monotonic()
    sender = threading.Thread(target=send_big)
    sender.start()
    wait_until_searching(server.url, before, sender)
    latencies = []
    for query in gold_subquestions(5):
        t = time.monotonic()
        assert httpx.post(f"{server.url}/search", json={"query": query, "top_n": 3}).json() == wire(
            direct.search([query], 3)[0]
        )
        latencies.append(time.monotonic() - t)
    sender.join()
    big_s = finished["big"] - started
    # The batch is as large as the request limits allow; on an idle 2-core machine it takes about 2 s.
    assert big_s > 1.0, "the big batch was too quick to show anything; make it bigger"
    assert max(latencies) < big_s / 4, (latencies, big_s)


def test_sigterm_drains_requests_in_flight_then_exits_0(demo_index):
    """Graceful shutdown: a batch in flight when SIGTERM arrives is answered in full, then the server exits
    with status 0 (it once died by the signal, status 143, dropping what was in flight)."""
    srv = Server(demo_index).start()
    reply: dict[str, httpx.Response] = {}
    batch = {"query": [LONG_QUERIES[i % len(LONG_QUERIES)] for i in range(1500)], "top_n": 3}
    sender = threading.Thread(
        target=lambda: reply.update(r=httpx.post(f"{srv.url}/batch_search", json=batch, timeout=120))
    )
    try:
        sender.start()
        wait_until_searching(srv.url, 0, sender)
        srv.signal(signal.SIGTERM)
        assert srv.process.wait(60) == 0, srv.process.stderr.read().decode()[-2000:]
        sender.join(10)
        assert reply["r"].status_code == 200 and len(reply["r"].json()) == 1500
    finally:
        srv.stop()


def test_server_shuts_down_promptly_on_sigterm(demo_index):
    """Idle: uvicorn stops, the batcher's worker stops, exit status 0."""
    srv = Server(demo_index).start()
    try:
        srv.signal(signal.SIGTERM)
        assert srv.process.wait(15) == 0
    finally:
        srv.stop()


@pytest.mark.slow
def test_a_passage_with_a_lone_surrogate_is_served_with_a_replacement_character(tmp_path):
    """JSON can spell a lone surrogate ("\\ud800"); no UTF-8 response can carry one. The corpus reader turns it
    into U+FFFD, so the service answers 200 instead of failing to encode the hit."""
    corpus = tmp_path / "corpus.jsonl"
    docs = [
        {"id": "a", "contents": '"Zorblax"\nZorblax is a broken \ud800 city.'},
        {"id": "b", "contents": '"Other"\nNothing to see here.'},
    ]
    corpus.write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")  # json escapes \ud800
    srv = Server(cached_index(corpus, progress=False)).start()
    try:
        response = httpx.post(f"{srv.url}/retrieve", json={"queries": ["Zorblax city"], "topk": 1}, timeout=30)
    finally:
        srv.stop()
    assert response.status_code == 200, response.text
    (hit,) = response.json()["result"][0]
    assert hit["id"] == "a" and "broken \ufffd city" in hit["contents"]
