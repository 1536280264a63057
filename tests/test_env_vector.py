"""ReSearchEnv under Gymnasium's vector envs, including AsyncVectorEnv with shared memory, where
Gymnasium's own Text layout would drop every character outside its charset."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces import Text
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

import research_env  # noqa: F401
from research_env.spaces import UnicodeText

UNICODE_QUESTION = "Wer gründete Zürich — 苏黎世 🎉, and who was his café's owner?"
ACTIONS = [
    "<think> ü 中 </think><search> Zürich founded </search>",
    "<think> ok </think><answer> \\boxed{y} </answer><|endoftext|>",
]


@pytest.fixture(scope="module")
def unicode_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "unicode.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(3):
            f.write(json.dumps({"id": f"u{i}", "question": f"{UNICODE_QUESTION} #{i}", "golden_answers": ["x"]}) + "\n")
    return path


def test_unicode_text_accepts_any_string_that_gymnasium_text_rejects():
    assert UnicodeText(64).contains(UNICODE_QUESTION) and UnicodeText(64).contains("")
    assert not Text(64).contains(UNICODE_QUESTION)
    assert not UnicodeText(8).contains("x" * 9) and not UnicodeText(8).contains(b"bytes")


def test_gymnasium_text_shared_memory_is_a_stale_copy():
    """Why the env refuses shared memory: what AsyncVectorEnv reads once at start-up never changes."""
    space = Text(16)
    memory = create_shared_memory(space, n=1)
    observations = read_from_shared_memory(space, memory, n=1)  # what AsyncVectorEnv keeps
    write_to_shared_memory(space, 0, "Zurich", memory)  # what a worker writes after a step
    assert read_from_shared_memory(space, memory, n=1) == ("Zurich",)
    assert observations != ("Zurich",)


def test_async_shared_memory_is_refused_with_a_clear_error(unicode_dataset):
    with pytest.raises(ValueError, match="shared_memory") as error:
        gym.make_vec("ReSearch-v0", num_envs=2, dataset=str(unicode_dataset), vectorization_mode="async")
    assert "shared_memory=False" in str(error.value.__cause__)


def run(vector_env: gym.vector.VectorEnv) -> list:
    obs, _ = vector_env.reset(seed=[0, 1], options={"index": 0})
    transcript = [list(obs)]
    for action in ACTIONS:
        obs, reward, terminated, truncated, info = vector_env.step(np.array([action, action], dtype=object))
        transcript.append((list(obs), list(reward), list(terminated), list(info["num_searches"])))
    vector_env.close()
    return transcript


@pytest.mark.slow
def test_async_vector_env_without_shared_memory_matches_sync(unicode_dataset):
    make = dict(id="ReSearch-v0", num_envs=2, dataset=str(unicode_dataset))
    expected = run(gym.make_vec(**make, vectorization_mode="sync"))
    assert UNICODE_QUESTION in expected[0][0]
    assert expected[-1][1:3] == ([0.1, 0.1], [True, True])
    assert run(gym.make_vec(**make, vectorization_mode="async", vector_kwargs={"shared_memory": False})) == expected
