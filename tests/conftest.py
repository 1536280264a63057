"""Shared fixtures: the real data samples in ../shared/data and an index cache private to the run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Every test run builds its indexes from scratch into its own cache, so index building is tested too
# and a stale user cache can never make a test pass. Set before anything creates a retriever.
os.environ.setdefault("RESEARCH_ENV_CACHE", tempfile.mkdtemp(prefix="research_env_test_cache_"))
# Test clusters are single-machine: keep Ray's own traffic (GCS, raylet, workers) on 127.0.0.1. By default Ray
# binds to the machine's routable address; with "cluster mode" off it uses loopback, as it does on laptops.
# Read when ray is first imported, so it is set here, before any test module imports it; subprocesses inherit it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data samples are not at {SHARED_DATA}")
    return SHARED_DATA
