"""The service's index in a child process: ProcessRetriever on a real pyserini index, the server that runs its JVM
there (and outlives neither a dead index nor its own shutdown), and the bare-ASGI search routes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_service import ROOT, Server, demo_index, direct, free_port, gold_subquestions, threaded, wire  # noqa: F401  (fixtures)

from research_env.retrieval.process import IndexProcessError, ProcessRetriever
from research_env.retrieval.service import create_app
from research_env.retrieval.spec import RetrieverSpec


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def runs_a_jvm(pid: int) -> bool:
    return "libjvm" in Path(f"/proc/{pid}/maps").read_text()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def in_child(demo_index: Path) -> Iterator[ProcessRetriever]:  # noqa: F811
    retriever = ProcessRetriever(RetrieverSpec(index=str(demo_index)))
    yield retriever
    retriever.close()


def test_a_process_retriever_answers_as_the_index_does_in_process(in_child, direct):  # noqa: F811
    queries = gold_subquestions(20) + ["", "   "]
    for k in (1, 5, 12):
        assert in_child.search(queries, k) == direct.search(queries, k)
    assert in_child.search([], 3) == []
    assert (in_child.identity, in_child.num_docs) == (direct.identity, direct.num_docs)
    with pytest.raises(ValueError, match="k must be >= 1"):
        in_child.search(["Paris"], 0)


def test_an_index_the_child_cannot_open_is_an_error_that_names_it(tmp_path):
    before = len(multiprocessing.active_children())
    with pytest.raises(IndexProcessError, match="not a Lucene index"):
        ProcessRetriever(RetrieverSpec(index=str(tmp_path)))
    assert len(multiprocessing.active_children()) == before  # the failed child is gone


def test_a_dead_index_process_is_an_error_not_a_hang(demo_index):  # noqa: F811
    others = set(multiprocessing.active_children())
    retriever = ProcessRetriever(RetrieverSpec(index=str(demo_index)))
    try:
        assert retriever.search(["Paris"], 1)
        (child,) = set(multiprocessing.active_children()) - others
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        for _ in range(2):  # and it stays an error
            with pytest.raises(IndexProcessError, match="exited with code -9"):
                retriever.search(["Paris"], 1)
    finally:
        retriever.close()


def test_a_retriever_nobody_closed_does_not_hang_the_exit(demo_index):  # noqa: F811
    """multiprocessing joins its children at exit; the child must have been told to stop first."""
    code = (
        "from research_env.retrieval.process import ProcessRetriever\n"
        "from research_env.retrieval.spec import RetrieverSpec\n"
        f"retriever = ProcessRetriever(RetrieverSpec(index={str(demo_index)!r}))\n"
        "print(len(retriever.search(['Paris'], 2)[0]))\n"  # still referenced when the interpreter exits
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr[-2000:]


def test_with_index_process_the_server_runs_its_index_in_a_child_that_ends_with_it(demo_index, direct):  # noqa: F811
    """The HTTP server holds no JVM (its GIL serves HTTP only); the index process exits when the server drains."""
    srv = Server(demo_index, flags=("--index-process",)).start()
    try:
        query = gold_subquestions(1)[0]
        assert httpx.post(f"{srv.url}/search", json={"query": query, "top_n": 3}).json() == wire(
            direct.search([query], 3)[0]
        )
        assert not runs_a_jvm(srv.process.pid)
        (index_pid,) = [pid for pid in children(srv.process.pid) if runs_a_jvm(pid)]
        srv.signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0, srv.process.stderr.read().decode()[-2000:]
        deadline = time.monotonic() + 10
        while alive(index_pid):
            assert time.monotonic() < deadline, "the index process outlived the server"
            time.sleep(0.1)
    finally:
        srv.stop()


def test_the_server_answers_500_naming_a_dead_index_process_and_keeps_answering_health(demo_index):  # noqa: F811
    srv = Server(demo_index, flags=("--index-process",)).start()
    try:
        (index_pid,) = [pid for pid in children(srv.process.pid) if runs_a_jvm(pid)]
        os.kill(index_pid, signal.SIGKILL)
        response = httpx.post(f"{srv.url}/search", json={"query": "Paris"}, timeout=30)
        assert response.status_code == 500 and "index process" in response.json()["detail"]
        assert httpx.get(f"{srv.url}/health").status_code == 200
    finally:
        srv.stop()


class _Buggy:
    """A real index that hits a bug (a TypeError, not a RetrieverError) on one query."""

    def __init__(self, inner) -> None:
        self.inner = inner

    @property
    def identity(self) -> str:
        return self.inner.identity

    def search(self, queries, k):
        if "boom" in queries:
            raise TypeError("a bug")
        return self.inner.search(queries, k)


@pytest.fixture
def buggy_service(threaded) -> Iterator[str]:  # noqa: F811
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(_Buggy(threaded)), port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_search_routes_answer_other_methods_405_and_a_bug_500_then_keep_serving(buggy_service):
    with httpx.Client(base_url=buggy_service) as client:
        for path in ("/search", "/batch_search", "/retrieve"):
            response = client.get(path)
            assert response.status_code == 405 and response.headers["allow"] == "POST"
            assert response.json() == {"detail": "Method Not Allowed"}
        response = client.post("/search", json={"query": "boom"})
        assert response.status_code == 500 and response.text == "Internal Server Error"
        assert len(client.post("/batch_search", json={"query": ["Paris", "Nile"], "top_n": 2}).json()) == 2
        assert client.get("/health").json()["status"] == "ok"


@pytest.mark.slow
def test_the_service_benchmark_writes_its_ratios_as_json(tmp_path):
    """``benchmarks/run.py`` calls ``retrieval.py --service --quick --json PATH`` and reads ``ratios``."""
    out = tmp_path / "retrieval.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "retrieval.py"),
            "--service",
            "--quick",
            "--json",
            str(out),
            "--clients",
            "1",
            "4",
            "--rounds",
            "2",
            "--seconds",
            "0.3",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )
    record = json.loads(out.read_text())
    assert record["benchmark"] == "retrieval" and len(record["load_average"]) == 3
    assert {"service req/s batched/unbatched @4", "service p99 batched/unbatched @4"} <= set(record["ratios"])
    assert all(isinstance(v, float) and v > 0 for v in record["ratios"].values())
    assert [row["clients"] for row in record["rows"]] == [1, 4]
