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

#: The smallest run that still plays whole groups through the env and updates: 1 question x 2 rollouts, the tiny
#: random model as it is (no warm start, no held-out evaluation), every group in the update.
TINY_RUN = [
    "--prompts",
    "1",
    "--group-size",
    "2",
    "--max-new-tokens",
    "4",
    "--max-turns",
    "1",
    "--num-cpus",
    "2",
    "--env",
    "ReSearch-MuSiQue-v0",
    "--no-small-vocab",
    "--no-sft-warmstart",
    "--eval-every",
    "0",
    "--minibatches",
    "1",
    "--no-drop-zero-advantage",
]


def qwen25_shaped_checkpoint(directory: Path, shape: str) -> Path:
    """A Hugging Face checkpoint of one of Qwen2.5's real shapes (``agents.training.memory.QWEN25_SHAPES``) with random
    weights (seed 0) and the real Qwen2.5 tokenizer: what the GPU tests train, since no weights can be downloaded."""
    from agents.policies.models import qwen2_config, random_causal_lm
    from agents.training.memory import QWEN25_SHAPES
    from research_env.tokenizer import build_qwen25_tokenizer

    size = QWEN25_SHAPES[shape]
    config = qwen2_config(
        size.vocab_size,
        [151643, 151645],  # <|endoftext|>, <|im_end|>
        151643,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        max_position_embeddings=32768,
        head_dim=size.head_dim,
    )
    random_causal_lm(config, seed=0).save_pretrained(directory)
    build_qwen25_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data samples are not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray instance for one test module (on 127.0.0.1, see above).

    ray.init and ray.shutdown replace the signal handlers of the JVM that earlier tests started in this
    process; they are put back at once (research_env.retrieval.jvm_signals says why that matters).
    """
    import ray

    from research_env.retrieval import reclaim_jvm_signal_handlers

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    reclaim_jvm_signal_handlers()
    try:
        yield
    finally:
        ray.shutdown()
        reclaim_jvm_signal_handlers()


@pytest.fixture(scope="session")
def small_vocab():
    """A 1,024-token BPE trained on the oracle traces of the first four MuSiQue questions, and their ids."""
    import gymnasium as gym

    import research_env  # noqa: F401  (registers the env ids)
    from agents.policies.small_vocab import oracle_trace_texts, train_small_tokenizer

    text_env = gym.make("ReSearch-MuSiQue-v0", top_k=1)
    dataset = text_env.unwrapped.dataset
    ids = dataset.ids[:4]
    return train_small_tokenizer(oracle_trace_texts(text_env, ids), vocab_size=1024), ids
