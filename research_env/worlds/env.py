"""``ReSearch-Synthetic-v0``: a :class:`ReSearchEnv` over a cached synthetic world, so that the env works
offline with zero arguments and any world is one set of keyword arguments away."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from research_env.env import ReSearchEnv
from research_env.registration import SYNTHETIC_ENV_ID
from research_env.worlds.world import CORPUS_FILE, SPLITS, WorldConfig, cached_world


def make_synthetic_env(
    seed: int = 0,
    hops: int | str | Iterable[int] = 1,
    num_questions: int = 500,
    num_entities: int = 3000,
    split: str = "train",
    **env_kwargs: Any,
) -> ReSearchEnv:
    """The env over the world of these parameters (generated into the cache on first use).

    ``split`` names the world's split, optionally sliced: ``"train"``, ``"test[:100]"``. Every other keyword
    (``top_k``, ``max_searches``, ``retriever``, ``template``, …) goes to :class:`ReSearchEnv`.
    """
    if split.partition("[")[0] not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (optionally sliced, e.g. 'test[:100]'), got {split!r}")
    if "dataset" in env_kwargs or "corpus" in env_kwargs:
        raise ValueError(
            f"{SYNTHETIC_ENV_ID} generates its own dataset and corpus; to play a world written by "
            "scripts/make_synthetic.py use gym.make('ReSearch-v0', dataset=DIR/test.jsonl, "
            "corpus=DIR/corpus.jsonl)"
        )
    world = cached_world(WorldConfig(seed=seed, hops=hops, num_questions=num_questions, num_entities=num_entities))
    if env_kwargs.get("retriever") is None:
        env_kwargs["corpus"] = world / CORPUS_FILE
    return ReSearchEnv(dataset=world, split=split, **env_kwargs)
