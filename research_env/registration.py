"""Gymnasium ids: one per evaluation set of the paper, each defaulting to its shipped sample and
the shipped demo corpus, ``ReSearch-Synthetic-v0`` over a generated world (``research_env.worlds``),
plus ``ReSearch-v0`` for any dataset path."""

from __future__ import annotations

import gymnasium as gym

from research_env.assets import DEMO_DATASETS

ENTRY_POINT = "research_env.env:ReSearchEnv"

ENV_IDS: dict[str, str] = {
    "ReSearch-MuSiQue-v0": "musique",
    "ReSearch-HotpotQA-v0": "hotpotqa",
    "ReSearch-2WikiMultihopQA-v0": "2wikimultihopqa",
    "ReSearch-Bamboogle-v0": "bamboogle",
}
GENERIC_ENV_ID = "ReSearch-v0"
SYNTHETIC_ENV_ID = "ReSearch-Synthetic-v0"


def register_envs() -> None:
    """Register the ids (idempotent, so re-importing the package is harmless)."""
    for env_id, name in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=ENTRY_POINT, kwargs={"dataset": str(DEMO_DATASETS[name])})
    if SYNTHETIC_ENV_ID not in gym.registry:
        gym.register(SYNTHETIC_ENV_ID, entry_point="research_env.worlds.env:make_synthetic_env")
    if GENERIC_ENV_ID not in gym.registry:
        gym.register(GENERIC_ENV_ID, entry_point=ENTRY_POINT)
