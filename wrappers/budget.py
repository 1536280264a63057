"""``Budget``: truncate an episode on a context-token budget or a number of turns."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from research_env.reward import EpisodeOutcome

#: ReSearch's context budget: prompt, generated and retrieved tokens together.
RESEARCH_MAX_TOKENS = 8192


class Budget(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Truncate when the context passes ``max_tokens`` or the policy has taken ``max_turns`` steps.

    * ``max_tokens`` (needs :class:`~wrappers.TokenizedEnv` underneath): the context may hold at most
      ``max_tokens`` ids. A step that leaves it longer, or exactly full without the episode having ended,
      truncates with reward 0 — even if the step ended with EOS, because a generator capped at the budget
      could never have produced that EOS (as in ReSearch, where an over-long response earns nothing).
      Every ``info`` carries ``tokens_left`` so that the generator can cap its next call.
    * ``max_turns``: the episode truncates after that many steps (policy chunks) unless it ended.

    Searches are budgeted by the env itself (``max_searches=``): it stops *before* retrieving.
    Like the env's own budgets, a stop sets ``truncated=True``, ``reward=0.0``,
    ``info["truncation_reason"]`` (``"max_tokens"`` or ``"max_turns"``) and zero scores in ``info``.
    The first budget to trip wins; an episode the inner env already truncated keeps its reason.

    Example:
        >>> import gymnasium as gym, research_env
        >>> from wrappers import Budget
        >>> env = Budget(gym.make("ReSearch-MuSiQue-v0"), max_turns=1)
        >>> _ = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("<think> still thinking")
        >>> truncated, info["truncation_reason"]
        (True, 'max_turns')
    """

    def __init__(self, env: gym.Env, *, max_tokens: int | None = None, max_turns: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, max_tokens=max_tokens, max_turns=max_turns)
        gym.Wrapper.__init__(self, env)
        if max_tokens is not None:
            if max_tokens < 1:
                raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
            space = env.observation_space
            if not (isinstance(space, gym.spaces.Dict) and "input_ids" in space.spaces):
                raise TypeError("max_tokens counts token ids: wrap the env in wrappers.TokenizedEnv before Budget")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.max_tokens, self.max_turns = max_tokens, max_turns
        self._turns = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._turns = 0
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._with_tokens_left(obs, info)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._turns += 1
        info = self._with_tokens_left(obs, info)
        if truncated:
            return obs, reward, terminated, truncated, info
        reason = None
        if self.max_tokens is not None and (info["tokens_left"] < 0 or (info["tokens_left"] == 0 and not terminated)):
            reason = "max_tokens"
        elif self.max_turns is not None and self._turns >= self.max_turns and not terminated:
            reason = "max_turns"
        if reason is None:
            return obs, reward, terminated, truncated, info
        # The same outcome as the env's own budget stops (SPEC §9).
        info.update(EpisodeOutcome.budget_stop(reason, self.env.unwrapped.record.golden_answers).info())
        return obs, 0.0, False, True, info

    def _with_tokens_left(self, obs: Any, info: dict[str, Any]) -> dict[str, Any]:
        if self.max_tokens is None:
            return info
        return {**info, "tokens_left": self.max_tokens - len(obs["input_ids"])}
