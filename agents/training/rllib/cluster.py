"""Starting or joining the Ray cluster a training run uses: a local one listens on 127.0.0.1 only, unless the
user asks for all interfaces, and the JVM of an embedded BM25 index keeps its signal handlers across it."""

from __future__ import annotations

import os
import sys

#: Ray (2.60) reads this when it is imported: with "cluster mode" off, a local instance binds its GCS, raylet and
#: agents to loopback, as on laptops; otherwise they listen on every interface of the machine.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(address: str | None = None, num_cpus: int | None = None, *, all_interfaces: bool = False) -> None:
    """``ray.init`` for a training driver: join ``address``, or start a local instance on 127.0.0.1 (on every
    interface with ``all_interfaces``, for workers on other machines to join)."""
    if address is None and not all_interfaces:
        if "ray" in sys.modules and os.environ.get(_LOOPBACK_ENV) != "0":
            raise RuntimeError(
                "ray was imported before init_ray could keep the local cluster on 127.0.0.1; call "
                "init_ray before importing ray, or pass all_interfaces=True"
            )
        os.environ[_LOOPBACK_ENV] = "0"
    import ray

    from research_env.retrieval import reclaim_jvm_signal_handlers

    if address is not None:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)
    reclaim_jvm_signal_handlers()  # an embedded BM25 index's JVM may run already, and ray.init took its signals
