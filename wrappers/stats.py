"""``EpisodeStatistics``: per-episode return, length, searches, response tokens and where the time went."""

from __future__ import annotations

import time
from typing import Any, SupportsFloat

import gymnasium as gym


class EpisodeStatistics(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """At the end of an episode, ``info["episode"]`` holds (Gymnasium's ``RecordEpisodeStatistics`` keys
    first, so loggers that know those keep working):

    * ``r`` return, ``l`` steps (policy chunks), ``t`` wall seconds since reset;
    * ``searches``: searches the env ran (``info["num_searches"]``; the paper watches this rise from
      about 1.5 to 3.5–4 per rollout during training);
    * ``response_tokens``: tokens the policy wrote (``policy_mask`` ones), only when the observation
      comes from :class:`~wrappers.TokenizedEnv`;
    * ``env_s``: seconds spent inside the wrapped env's ``step``, and ``retrieval_s``, the part of it spent
      retrieving (the ``latency_s`` of each ``info["search"]``). ``t - env_s`` is the policy's time.

    Under a vector env, Gymnasium adds the usual ``info["_episode"]`` mask.

    Example:
        >>> import gymnasium as gym, research_env
        >>> from wrappers import EpisodeStatistics
        >>> env = EpisodeStatistics(gym.make("ReSearch-MuSiQue-v0"))
        >>> _ = env.reset(seed=0)
        >>> _ = env.step("<think> hmm </think><search> Polish-Russian War </search>")
        >>> *_, info = env.step("<answer> \\\\boxed{1610} </answer><|endoftext|>")
        >>> info["episode"]["l"], info["episode"]["searches"]
        (2, 1)
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._start = time.perf_counter()
        self._return, self._length, self._env_s, self._retrieval_s = 0.0, 0, 0.0, 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._start = time.perf_counter()
        self._return, self._length, self._env_s, self._retrieval_s = 0.0, 0, 0.0, 0.0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        started = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._env_s += time.perf_counter() - started
        self._return += float(reward)
        self._length += 1
        if "search" in info:
            self._retrieval_s += info["search"]["latency_s"]
        if terminated or truncated:
            episode = {
                "r": self._return,
                "l": self._length,
                "t": round(time.perf_counter() - self._start, 6),
                "searches": info["num_searches"],
                "env_s": self._env_s,
                "retrieval_s": self._retrieval_s,
            }
            if isinstance(obs, dict) and "policy_mask" in obs:
                episode["response_tokens"] = sum(obs["policy_mask"])
            info = {**info, "episode": episode}
        return obs, reward, terminated, truncated, info
