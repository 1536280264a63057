"""The service as a real Ray Serve deployment with 2 replicas on a local Ray cluster (slow: ~30 s)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_service import demo_index, direct, free_port, gold_subquestions  # noqa: F401  (fixtures)

from research_env.retrieval.http import HTTPRetriever
from research_env.retrieval.spec import RetrieverSpec

serve = pytest.importorskip("ray.serve", reason='pip install "ray[serve]"')
pytest.importorskip("grpc", reason='pip install "ray[serve]"')


@pytest.fixture(scope="module")
def ray_service(demo_index, ray_cluster) -> Iterator[str]:  # noqa: F811
    from research_env.retrieval.ray_serve import retriever_application

    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            retriever_application(RetrieverSpec(index=str(demo_index)), replicas=2, cpus_per_replica=0.5),
            name="retriever",
            route_prefix="/",
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.mark.slow
def test_two_replicas_serve_both_wire_formats_correctly(ray_service, direct):  # noqa: F811
    status = serve.status().applications["retriever"].deployments["retriever"]
    assert status.replica_states.get("RUNNING") == 2
    queries = gold_subquestions(40)
    expected = direct.search(queries, 3)
    clients = [HTTPRetriever(ray_service, wire_format, deadline_s=30) for wire_format in ("research", "search-r1")]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: clients[i % 2].search([queries[i]], 3)[0], range(len(queries))))
    assert got == expected
    assert clients[0].health()["index"] == direct.identity
