"""``HTTPRetriever`` against a real server: faults (killed mid-episode, restarted, hung), deadlines, rejected
requests, and an env running its episode through the service."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from test_service import Server, demo_index, direct, free_port, gold_subquestions  # noqa: F401  (fixtures)

from research_env import ReSearchEnv
from research_env.assets import DEMO_DATASETS
from research_env.retrieval import Retriever
from research_env.retrieval.http import HTTPRetriever, RetrieverRequestError, RetrieverUnavailable

SEARCH = "<think> find the father </think><search> Edward Baring, 1st Baron Revelstoke father </search>"


@pytest.fixture(scope="module")
def server(demo_index) -> Iterator[Server]:  # noqa: F811
    """One server for the module; the fault tests kill or freeze it and bring it back before they end."""
    srv = Server(demo_index).start()
    yield srv
    srv.stop()


def test_client_satisfies_the_protocol_and_speaks_both_formats(server, direct):  # noqa: F811
    queries = gold_subquestions(5)
    for wire_format in ("research", "search-r1"):
        with HTTPRetriever(server.url, wire_format) as client:
            assert isinstance(client, Retriever) and server.url in client.identity
            assert client.search(queries, 4) == direct.search(queries, 4)
            assert client.search([], 4) == []


def test_large_calls_are_split_into_requests_the_server_accepts(server, direct):  # noqa: F811
    queries = gold_subquestions(120) * 2
    before = server_requests(server)
    with HTTPRetriever(server.url, max_batch=50) as client:
        assert client.search(queries, 1) == direct.search(queries, 1)
    assert server_requests(server) - before == 5


def test_rejected_request_raises_at_once_without_retrying(server):
    with HTTPRetriever(server.url, max_batch=10_000, deadline_s=20) as client:
        started = time.monotonic()
        with pytest.raises(RetrieverRequestError, match="422"):
            client.search(["q"] * 5000, 3)
        assert time.monotonic() - started < 2


def test_dead_service_is_retried_until_the_deadline_and_the_message_says_what_happened():
    """No attempt cap may end the call before its deadline (the client once gave up after ~2 s of a 120 s
    deadline); the error reports the attempts made and the time waited, truthfully."""
    with HTTPRetriever(f"http://127.0.0.1:{free_port()}", deadline_s=3.0, max_backoff_s=0.2) as client:
        started = time.monotonic()
        with pytest.raises(RetrieverUnavailable) as raised:
            client.search(["anything"], 5)
        waited = time.monotonic() - started
    assert 2.9 < waited < 3.6
    attempts = int(re.search(r"(\d+) attempts over ([\d.]+)s", str(raised.value)).group(1))
    assert attempts > 10 and "3.0s deadline" in str(raised.value) and "ConnectError" in str(raised.value)


def test_service_that_comes_up_after_the_first_search_is_ridden_out(demo_index, direct):  # noqa: F811
    """The service starts a few seconds after the client began searching (a restart, a slow boot): the
    search succeeds, with the same documents as the index itself."""
    srv = Server(demo_index)
    starter = threading.Timer(3.0, srv.start)
    with HTTPRetriever(srv.url, deadline_s=90.0) as client:
        starter.start()
        try:
            started = time.monotonic()
            assert client.search(["Paris"], 3) == direct.search(["Paris"], 3)
            assert time.monotonic() - started > 3.0
        finally:
            starter.join()
            srv.stop()


def test_server_killed_mid_episode_then_restarted(server):
    """The failed search raises (never an empty result); the env keeps the pending search, so the episode
    continues from the same point once the service is back."""
    client = HTTPRetriever(server.url, deadline_s=2.0, backoff_s=0.05)
    env = ReSearchEnv(dataset=DEMO_DATASETS["musique"], retriever=client)
    env.reset(options={"index": 0})
    _, _, _, _, info = env.step(SEARCH)
    assert info["search"]["doc_ids"]
    server.signal(signal.SIGKILL)
    server.process.wait(5)
    started = time.monotonic()
    with pytest.raises(RetrieverUnavailable):
        env.step(SEARCH)
    assert time.monotonic() - started < 2.5
    server.start()
    query = "Edward Baring, 1st Baron Revelstoke father"
    observation, reward, terminated, truncated, info = env.end_step(client.search([query], env.top_k)[0])
    assert info["num_searches"] == 2 and observation.endswith("</result>") and not (terminated or truncated)
    client.close()


def test_hung_server_deadline_is_honoured_and_recovery_is_immediate(server, direct):  # noqa: F811
    client = HTTPRetriever(server.url, deadline_s=1.5)
    assert client.search(["Paris"], 3) == direct.search(["Paris"], 3)
    server.signal(signal.SIGSTOP)  # accepts connections (kernel backlog) but never answers
    try:
        started = time.monotonic()
        with pytest.raises(RetrieverUnavailable, match="ReadTimeout|ConnectTimeout"):
            client.search(["Paris"], 3)
        assert 1.4 < time.monotonic() - started < 2.5
    finally:
        server.signal(signal.SIGCONT)
    assert client.search(["Paris"], 3) == direct.search(["Paris"], 3)
    client.close()


def test_client_rides_out_a_restart_within_its_deadline(server, direct):  # noqa: F811
    """A server that comes back before the deadline is invisible to the caller (retries with backoff)."""
    client = HTTPRetriever(server.url, deadline_s=60.0, backoff_s=0.1, max_backoff_s=0.5)
    server.stop()
    restarter = threading.Thread(target=lambda: (time.sleep(0.5), server.start()))
    restarter.start()
    try:
        assert client.search(["Paris"], 2) == direct.search(["Paris"], 2)
    finally:
        restarter.join()
        client.close()


def server_requests(server: Server) -> int:
    return httpx.get(f"{server.url}/health").json()["batcher"]["requests"]
