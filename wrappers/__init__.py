"""Wrappers over any ReSearch env: token view with loss masks, chat-template checks, budgets, traces with
replay, and episode statistics. Each is a Gymnasium wrapper; they stack, and work inside vector envs.

A typical training stack, innermost first::

    EpisodeStatistics(RecordTrace(Budget(TokenizedEnv(env, tokenizer), max_tokens=8192), trace_dir))
"""

from wrappers.budget import RESEARCH_MAX_TOKENS, Budget
from wrappers.chat import ChatTemplate, ChatTemplateError
from wrappers.stats import EpisodeStatistics
from wrappers.tokenized import TokenIds, TokenizationError, TokenizedEnv
from wrappers.trace import RecordTrace, TraceMismatchError, load_trace, observation_digest, replay

__all__ = [
    "RESEARCH_MAX_TOKENS",
    "Budget",
    "ChatTemplate",
    "ChatTemplateError",
    "EpisodeStatistics",
    "RecordTrace",
    "TokenIds",
    "TokenizationError",
    "TokenizedEnv",
    "TraceMismatchError",
    "load_trace",
    "observation_digest",
    "replay",
]
