"""Shared fixtures: the real data samples in ../shared/data and an index cache private to the run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Every test run builds its indexes from scratch into its own cache, so index building is tested too
# and a stale user cache can never make a test pass. Set before anything creates a retriever.
os.environ.setdefault("RESEARCH_ENV_CACHE", tempfile.mkdtemp(prefix="research_env_test_cache_"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data samples are not at {SHARED_DATA}")
    return SHARED_DATA
