"""The retrieval service as a Ray Serve deployment: N replicas, each with its own index and micro-batcher,
behind Ray's HTTP proxy, when one process no longer keeps up with a training run's rollout workers.

Each replica builds its retriever from a :class:`RetrieverSpec` (so the index must be readable from every
node) and serves the same FastAPI app as ``scripts/serve_retriever.py``: same endpoints, same wire formats.
"""

from __future__ import annotations

from typing import Any

from research_env.retrieval.spec import RetrieverSpec


class RetrieverReplica:
    """One replica: the retriever and the app are built on the replica, not pickled from the driver
    (a JVM or a faiss index cannot travel)."""

    def __init__(self, spec: RetrieverSpec, app_options: dict[str, Any] | None = None) -> None:
        self.spec, self.app_options = spec, dict(app_options or {})
        self.retriever = spec.build()

    def __serve_build_asgi_app__(self) -> Any:
        from research_env.retrieval.service import create_app

        return create_app(self.retriever, **self.app_options)


def retriever_application(
    spec: RetrieverSpec, replicas: int = 2, cpus_per_replica: float = 1.0, app_options: dict[str, Any] | None = None
) -> Any:
    """A bound Ray Serve application of ``replicas`` retriever replicas, ready for ``serve.run``.

    Example:
        >>> from ray import serve
        >>> serve.start(http_options={"host": "127.0.0.1", "port": 8000})
        >>> serve.run(retriever_application(RetrieverSpec(corpus="corpus.jsonl"), replicas=4), route_prefix="/")
    """
    from ray import serve

    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    deployment = serve.deployment(
        serve.ingress()(RetrieverReplica),
        name="retriever",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica},
    )
    return deployment.bind(spec, app_options)


def run_ray_service(
    spec: RetrieverSpec,
    replicas: int,
    host: str = "127.0.0.1",
    port: int = 8000,
    app_options: dict[str, Any] | None = None,
    blocking: bool = True,
) -> None:
    """Start Ray Serve's proxy on ``host:port`` and deploy the replicas (joins a running Ray cluster when
    ``RAY_ADDRESS`` is set, else starts a local one)."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(
        retriever_application(spec, replicas, app_options=app_options),
        name="retriever",
        route_prefix="/",
        blocking=blocking,
    )
