"""The one place where research_env relies on Gymnasium internals (checked on gymnasium 1.2.2, the version ray[rllib]
2.60 pins): ``SyncVectorEnv`` keeps which sub-envs await their autoreset in a private array, and its ``step`` reads
its sub-envs from ``self.envs``. The batched vector env needs both to step the sub-envs itself and still hand
``SyncVectorEnv.step`` the results, so that its autoreset logic (all three modes) runs unchanged. When upgrading
Gymnasium, re-check ``SyncVectorEnv.step`` against these two functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv


def envs_awaiting_autoreset(vector_env: SyncVectorEnv) -> set[int]:
    """The sub-envs that ``SyncVectorEnv.step`` will reset instead of stepping (next-step autoreset only)."""
    if vector_env.autoreset_mode != AutoresetMode.NEXT_STEP:
        return set()
    return {i for i, waiting in enumerate(vector_env._autoreset_envs) if waiting}


@contextmanager
def substituted_envs(vector_env: SyncVectorEnv, envs: Sequence[gym.Env]) -> Iterator[None]:
    """``vector_env``'s sub-envs replaced by ``envs`` for the duration (``SyncVectorEnv.step`` reads ``envs``)."""
    original = vector_env.envs
    vector_env.envs = list(envs)
    try:
        yield
    finally:
        vector_env.envs = original
