"""``ReSearchEnv``: one multi-hop question per episode, answered by a policy that interleaves
reasoning with search (SPEC §1). Observations are the append-only transcript; actions are the
policy's next text chunk; the env runs searches and scores the final answer."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from research_env import protocol
from research_env.data import QADataset, QARecord, load_qa_dataset
from research_env.retrieval import Document, Retriever, shared_retriever
from research_env.reward import EpisodeOutcome, EpisodeScore, RewardFn, get_reward_fn, score_response
from research_env.spaces import UnicodeText
from research_env.templates import PromptTemplate, render_prompt, resolve_template

#: The text budget. ReSearch allows 8,192 tokens of context (about 35k characters of English); a 4-hop
#: MuSiQue episode with top-5 results is about 15k characters. 64k characters never cuts a legitimate
#: episode; token-exact budgets belong to the token wrappers.
DEFAULT_MAX_CONTEXT_CHARS = 65_536
#: Passages longer than this are cut (with a warning): the longest shipped passage has 4,181 characters and a
#: DPR passage about 600, while one 10 MB passage would otherwise become a 10M-character result block.
DEFAULT_MAX_PASSAGE_CHARS = 8192


class SearchPendingError(ResetNeeded):
    """A new chunk came while the previous chunk's search is still waiting for the retriever."""


class ReSearchEnv(gym.Env[str, str]):
    """Multi-hop QA with search, as in ReSearch (arXiv 2503.19470).

    How an action chunk ends decides what happens:

    * ``…</search>``: the query (text between the last ``<search>`` and ``</search>``) is sent to the
      retriever and ``" <result>\\n{docs}\\n</result>"`` is appended; the episode goes on.
    * ``…{eos_token}``: the model ended its response: ``terminated`` with the reward of
      :func:`research_env.reward.score_response` (or ``reward_fn``).
    * anything else: appended; the next chunk continues the same response (the generator hit its
      per-call token limit).

    ``truncated`` (reward 0) only comes from a budget: the transcript passing ``max_context_chars``,
    or a search beyond ``max_searches`` (default: unlimited, as in ReSearch). A chunk longer than the whole
    budget is kept only up to ``max_context_chars`` characters, and a passage up to ``max_passage_chars``
    (with a warning), so that an observation stays within ``observation_space``.

    If the retriever fails (raises), the chunk stays appended and its search pending
    (:attr:`pending_query`): ``step("")`` retries it.

    Every ``info`` holds ``env_spans``, the ``(start, end)`` character spans of the observation that the
    env wrote after the prompt (the result blocks, which training masks out of the policy loss), and
    ``prompt_length``; the final ``info`` adds ``f1``, ``em``, ``acc``, ``format_ok``, ``answer`` and
    ``num_searches``.

    Example:
        >>> import gymnasium as gym, research_env
        >>> env = gym.make("ReSearch-MuSiQue-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("<think> ... </think><search> query </search>")
        >>> obs.endswith("</result>")
        True
    """

    metadata = {"render_modes": ["ansi", "human"]}

    def __init__(
        self,
        dataset: str | os.PathLike | QADataset | None = None,
        corpus: str | os.PathLike | None = None,
        *,
        split: str | None = None,
        top_k: int = 5,
        max_searches: int | None = None,
        max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS,
        max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS,
        apply_chat: bool = False,
        template: str | os.PathLike | PromptTemplate | None = None,
        tokenizer: Any = None,
        eos_token: str | None = None,
        retriever: Retriever | None = None,
        reward_fn: str | RewardFn | None = None,
        render_mode: str | None = None,
    ) -> None:
        if dataset is None:
            raise ValueError("ReSearchEnv needs dataset=PATH (FlashRAG JSONL, parquet, raw MuSiQue/HotpotQA/2Wiki)")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if max_passage_chars < 1 or max_context_chars < 1:
            raise ValueError(
                f"max_passage_chars and max_context_chars must be >= 1, got {max_passage_chars} and {max_context_chars}"
            )
        if max_searches is not None and max_searches < 0:
            raise ValueError(f"max_searches must be >= 0 or None, got {max_searches}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.dataset = dataset if isinstance(dataset, QADataset) else load_qa_dataset(dataset, split)
        if retriever is not None and corpus is not None:
            raise ValueError("pass either corpus= (indexed with BM25) or retriever=, not both")
        self.retriever: Retriever = retriever if retriever is not None else shared_retriever(corpus)
        self.top_k, self.max_searches, self.max_context_chars = top_k, max_searches, max_context_chars
        self.max_passage_chars = max_passage_chars
        self.apply_chat = apply_chat
        if apply_chat and tokenizer is None:
            from research_env.tokenizer import build_qwen25_tokenizer

            tokenizer = build_qwen25_tokenizer()
        elif isinstance(tokenizer, str | os.PathLike):
            from research_env.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(str(tokenizer))
        self.tokenizer = tokenizer
        self.template = resolve_template(template, apply_chat)
        self.eos_token: str = (
            eos_token
            or getattr(tokenizer, "eos_token", None)
            or (protocol.CHAT_EOS_TOKEN if apply_chat else protocol.BASE_EOS_TOKEN)
        )
        self.reward_fn = get_reward_fn(reward_fn)
        self.render_mode = render_mode
        # A chunk longer than the whole budget is cut to it (the step truncates anyway), so an observation is at
        # most one chunk and one result block longer than the budget.
        self.action_space = UnicodeText(max_context_chars)
        result_chars = len(protocol.format_result([""] * top_k)) + top_k * (max_passage_chars + 1)
        self.observation_space = UnicodeText(2 * max_context_chars + result_chars)
        self._transcript = ""
        self._done = True
        self._pending = None

    @property
    def stop_strings(self) -> list[str]:
        """Strings at which a generation backend must stop so that the env can act (besides EOS)."""
        return list(protocol.STOP_STRINGS)

    @property
    def record(self) -> QARecord:
        """The question of the current episode."""
        return self._record

    @property
    def prompt(self) -> str:
        return self._transcript[: self._prompt_length]

    @property
    def response(self) -> str:
        """Everything after the prompt: the policy's chunks and the env's result blocks."""
        return self._transcript[self._prompt_length :]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        index = self._question_index(options or {})
        self._record = self.dataset[index]
        self._transcript = render_prompt(self._record.question, self.template, self.apply_chat, self.tokenizer)
        self._prompt_length = len(self._transcript)
        self._policy_start = self._prompt_length  # where the policy's text since the env last wrote begins
        self._env_spans: list[tuple[int, int]] = []
        self._num_searches = 0
        self._done = False
        self._pending: protocol.ChunkKind | None = None
        self._query = ""
        return self._transcript, self._info(index=index, question=self._record.question)

    def _question_index(self, options: dict[str, Any]) -> int:
        """The question a reset asks for: ``question_id`` (wins when both are given, as a replayed trace does),
        ``index`` (an int in ``[0, len(dataset))``), or else one drawn with ``np_random``."""
        if unknown := sorted(set(options) - {"question_id", "index"}):
            raise ValueError(f"unknown reset options {unknown}: pass {{'question_id': ID}} or {{'index': i}}")
        if "question_id" in options:
            question_id = options["question_id"]
            if not isinstance(question_id, str | int) or isinstance(question_id, bool):
                raise TypeError(f"options['question_id'] must be a question id (str), got {question_id!r}")
            return self.dataset.index_of(question_id)
        if "index" in options:
            index = options["index"]
            if not isinstance(index, int | np.integer) or isinstance(index, bool | np.bool_):
                raise TypeError(f"options['index'] must be an int, got {index!r} ({type(index).__name__})")
            if not 0 <= index < len(self.dataset):
                raise IndexError(
                    f"options['index'] = {index} is out of range: {self.dataset.source} holds "
                    f"{len(self.dataset)} questions, so 0 <= index < {len(self.dataset)}"
                )
            return int(index)
        return int(self.np_random.integers(len(self.dataset)))

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """One policy chunk (see the class docstring). After the retriever failed (it raised, e.g.
        ``RetrieverUnavailable``), the chunk stays appended and its search pending (:attr:`pending_query`):
        ``step("")`` retries that search, and the episode goes on as if it had never failed."""
        if self.pending_query is not None:
            if action != "":
                raise SearchPendingError(
                    f"the search {self.pending_query!r} is still pending because the retriever "
                    "failed: retry it with step('') (step([]) under TokenizedEnv), or reset()"
                )
            query = self.pending_query
        else:
            query = self.begin_step(action)
            if query is None:
                return self.end_step()
        started = time.perf_counter()
        documents = self.retriever.search([query], self.top_k)[0]
        return self.end_step(documents, latency_s=time.perf_counter() - started)

    @property
    def pending_query(self) -> str | None:
        """The query of a search that was asked for but not answered yet (the retriever failed), else None."""
        return self._query if self._pending is protocol.ChunkKind.SEARCH and self._query else None

    def begin_step(self, action: str) -> str | None:
        """First half of :meth:`step`: append the chunk and return the search query it asks for, or None.

        Split out so that a vector env can send every env's pending query to the retriever in one
        batched call, then finish each env with :meth:`end_step`.
        """
        if self._done:
            raise ResetNeeded("the episode is over: call reset() before step()")
        if self._pending is not None:
            raise SearchPendingError(
                "the previous step's search is still pending (did the retriever fail?): retry "
                "it with step(''), or end_step(retriever.search([env.pending_query], top_k)[0])"
            )
        if not isinstance(action, str):
            raise TypeError(
                f"an action is the policy's next text chunk (str), got {type(action).__name__}; "
                "wrap the env in wrappers.TokenizedEnv to act with token ids"
            )
        if len(action) > self.max_context_chars:  # never usable: keep the budget's worth, and truncate in end_step
            self._transcript += action[: self.max_context_chars]
            self._pending = protocol.ChunkKind.CONTINUE
            return None
        self._transcript += action
        policy_text = self._transcript[self._policy_start :]
        self._pending = protocol.classify_chunk(policy_text, self.eos_token)
        if self._pending is protocol.ChunkKind.SEARCH:
            over_budget = self.max_searches is not None and self._num_searches >= self.max_searches
            # A lone surrogate cannot travel to a retriever (JSON, HTTP, the JVM): it is searched as U+FFFD.
            query = "" if over_budget else protocol.extract_search_query(policy_text)
            self._query = protocol.replace_lone_surrogates(query)
            return self._query or None  # an empty query is never sent to the retriever
        return None

    def end_step(
        self, documents: Sequence[Document] | None = None, *, latency_s: float = 0.0
    ) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """Second half of :meth:`step`: append the retrieved ``documents`` (for the query that
        :meth:`begin_step` returned) and return the usual step tuple.

        A step that searched reports ``info["search"] = {"query", "doc_ids", "scores", "latency_s"}``
        so that recorders can trace retrieval without touching the retriever.
        """
        kind, self._pending = self._pending, None
        if kind is None:
            raise ResetNeeded("end_step() without begin_step()")
        if kind is protocol.ChunkKind.END:
            spans = [(start - self._prompt_length, end - self._prompt_length) for start, end in self._env_spans]
            return self._finish(score_response(self.response, self._record.golden_answers, self.eos_token, spans))
        if kind is protocol.ChunkKind.SEARCH:
            if self.max_searches is not None and self._num_searches >= self.max_searches:
                return self._truncate("max_searches")
            query = self._query
            if query and documents is None:
                raise ValueError(f"end_step() needs the documents retrieved for the query {query!r}")
            documents = list(documents or [])
            contents = [self._passage(d) for d in documents] if query else [protocol.EMPTY_QUERY_NOTICE]
            self._append_result(contents)
            search = {
                "query": query,
                "doc_ids": [d.id for d in documents],
                "scores": [d.score for d in documents],
                "latency_s": latency_s,
            }
            if len(self._transcript) > self.max_context_chars:
                return self._truncate("max_context_chars", search=search)
            return self._transcript, 0.0, False, False, self._info(search=search)
        if len(self._transcript) > self.max_context_chars:
            return self._truncate("max_context_chars")
        return self._transcript, 0.0, False, False, self._info()

    def _passage(self, document: Document) -> str:
        """A document's contents as the env writes them: at most ``max_passage_chars`` characters, and lone
        surrogates (not Unicode characters: no tokenizer, JSON or HTTP client carries them) as U+FFFD."""
        contents = document.contents
        if len(contents) > self.max_passage_chars:
            warnings.warn(
                f"passage {document.id!r} has {len(contents):,} characters; the result block keeps its "
                f"first {self.max_passage_chars:,} (max_passage_chars)",
                stacklevel=3,
            )
            contents = contents[: self.max_passage_chars]
        return protocol.replace_lone_surrogates(contents)

    def _append_result(self, contents: list[str]) -> None:
        start = len(self._transcript)
        self._transcript += protocol.format_result(contents)
        self._env_spans.append((start, len(self._transcript)))
        self._policy_start = len(self._transcript)
        self._num_searches += 1

    def _finish(self, score: EpisodeScore) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._done = True
        return self._transcript, float(self.reward_fn(score)), True, False, self._info(**score.outcome.info())

    def _truncate(self, reason: str, **extra: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._done = True
        outcome = EpisodeOutcome.budget_stop(reason, self._record.golden_answers)
        return self._transcript, 0.0, False, True, self._info(**outcome.info(), **extra)

    def _info(self, **extra: Any) -> dict[str, Any]:
        return {
            "question_id": self._record.id,
            "prompt_length": self._prompt_length,
            "env_spans": list(self._env_spans),
            "num_searches": self._num_searches,
            **extra,
        }

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._transcript
        if self.render_mode == "human":
            print(self._transcript)
        return None
