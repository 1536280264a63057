"""Episode traces: ``RecordTrace`` writes one JSONL file per episode, ``replay`` re-runs one and checks
that the env reproduces it bit for bit."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym

TRACE_FORMAT = 1
#: The ``info`` keys of an episode's end that the trace keeps: the reward's parts and why it ended.
OUTCOME_KEYS = ("f1", "em", "acc", "format_ok", "answer", "reason", "truncation_reason", "num_searches")
#: Search fields a replay must reproduce; ``latency_s`` is only recorded.
_REPLAYED_SEARCH_FIELDS = ("query", "doc_ids", "scores")


class TraceMismatchError(ValueError):
    """A trace is incomplete or altered, or the env no longer reproduces it."""


def observation_digest(observation: Any) -> str:
    """SHA-256 of an observation (a transcript, or TokenizedEnv's dict of ids, mask and text)."""
    return hashlib.sha256(json.dumps(observation, sort_keys=True, default=list).encode()).hexdigest()


def _line(record: dict[str, Any]) -> str:
    # One canonical serialisation, so a digest can be recomputed from parsed records.
    return json.dumps(record, sort_keys=True) + "\n"


class RecordTrace(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Writes each episode to ``{trace_dir}/{name_prefix}-{episode:06d}.jsonl``, one record a line.

    * ``reset``: question id, reset seed and options, the retriever's index identity, ``top_k``, the
      EOS string and the observation's SHA-256;
    * ``step``: the action as given (text, or token ids under :class:`~wrappers.TokenizedEnv`), reward,
      terminated, truncated, the observation's SHA-256 and, when it searched, ``info["search"]``
      (query, retrieved doc ids, scores, latency);
    * ``end``: the outcome (:data:`OUTCOME_KEYS` of the last ``info``) and the SHA-256 of all lines
      before it, so an edit of any field (latency included) is detected by :func:`replay`.

    A step whose search failed and was retried (``step([])``, see :class:`~wrappers.TokenizedEnv`) is recorded
    once, with the action that asked for the search. Lines are flushed as they are written; an episode left
    unfinished (reset mid-episode, or a crash) has no ``end`` line and replays as incomplete. Place it above any
    :class:`~wrappers.Budget` so that budget stops are recorded. Files are never overwritten: give each worker
    of a vector env its own ``name_prefix``.

    Example:
        >>> import tempfile, gymnasium as gym, research_env
        >>> from wrappers import RecordTrace, replay
        >>> env = RecordTrace(gym.make("ReSearch-MuSiQue-v0"), tempfile.mkdtemp())
        >>> _ = env.reset(seed=0)
        >>> *_, info = env.step("<answer> \\\\boxed{1610} </answer><|endoftext|>")
        >>> replay(env.trace_path, gym.make("ReSearch-MuSiQue-v0"))
        0.0
    """

    def __init__(self, env: gym.Env, trace_dir: str | os.PathLike, *, name_prefix: str = "trace") -> None:
        gym.utils.RecordConstructorArgs.__init__(self, trace_dir=str(trace_dir), name_prefix=name_prefix)
        gym.Wrapper.__init__(self, env)
        self.trace_dir = Path(trace_dir)
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        self.name_prefix = name_prefix
        self.episode = 0
        self.trace_path: Path | None = None  # the current (or last) episode's file
        self._file = None
        self._digest = hashlib.sha256()
        self._failed_action: Any = None  # the action of a step whose search failed, until its retry succeeds

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._close()
        self._failed_action = None
        obs, info = self.env.reset(seed=seed, options=options)
        self.trace_path = self.trace_dir / f"{self.name_prefix}-{self.episode:06d}.jsonl"
        self.episode += 1
        self._file = self.trace_path.open("x", encoding="utf-8")
        self._digest = hashlib.sha256()
        env = self.env.unwrapped
        self._write(
            {
                "type": "reset",
                "format": TRACE_FORMAT,
                "question_id": info["question_id"],
                "seed": seed,
                "options": options or {},
                "index": env.retriever.identity,
                "top_k": env.top_k,
                "eos_token": env.eos_token,
                "obs_sha256": observation_digest(obs),
            }
        )
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception:
            if self._failed_action is None and self.env.unwrapped.pending_query is not None:
                self._failed_action = action  # the env kept it, its search pending: the retry records it
            raise
        if self._failed_action is not None:  # a retried search (an empty action): replay takes it in one step
            action, self._failed_action = self._failed_action, None
        record = {
            "type": "step",
            "action": action if isinstance(action, str) else [int(i) for i in action],
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "obs_sha256": observation_digest(obs),
        }
        if "search" in info:
            record["search"] = info["search"]
        self._write(record)
        if terminated or truncated:
            outcome = {key: info[key] for key in OUTCOME_KEYS if key in info}
            self._write({"type": "end", "outcome": outcome, "sha256": self._digest.hexdigest()})
            self._close()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._close()
        super().close()

    def _write(self, record: dict[str, Any]) -> None:
        line = _line(record)
        self._digest.update(line.encode())
        self._file.write(line)
        self._file.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load_trace(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a trace file."""
    with open(path, encoding="utf-8") as f:
        try:
            return [json.loads(line) for line in f if line.strip()]
        except json.JSONDecodeError as e:
            raise TraceMismatchError(f"{path} is not a JSONL trace: {e}") from None


def _expect(where: str, what: str, replayed: Any, recorded: Any) -> None:
    if replayed != recorded:
        raise TraceMismatchError(f"{where}: {what} is {replayed!r} on replay but {recorded!r} in the trace")


def replay(trace: str | os.PathLike | list[dict[str, Any]], env: gym.Env) -> float:
    """Re-run a trace on ``env`` (the same wrapper stack that was recorded, without the recorder) and
    return the episode's return. Raises :class:`TraceMismatchError` if the trace is incomplete or was
    edited, or if any observation, reward, end flag, search (query, doc ids, scores) or outcome differs.
    """
    records = trace if isinstance(trace, list) else load_trace(trace)
    if len(records) < 2 or records[0].get("type") != "reset" or records[-1].get("type") != "end":
        raise TraceMismatchError(
            "the trace is incomplete: it needs a reset line first and an end line last "
            "(the recorded episode was cut short, or lines were removed)"
        )
    head, steps, end = records[0], records[1:-1], records[-1]
    if head.get("format") != TRACE_FORMAT:
        raise TraceMismatchError(f"trace format {head.get('format')!r} is not {TRACE_FORMAT}")
    if hashlib.sha256("".join(map(_line, records[:-1])).encode()).hexdigest() != end.get("sha256"):
        raise TraceMismatchError(
            "the trace was altered after recording: its lines do not match the digest in its end line"
        )
    unwrapped = env.unwrapped
    _expect("env", "the index identity", unwrapped.retriever.identity, head["index"])
    _expect("env", "top_k", unwrapped.top_k, head["top_k"])
    _expect("env", "the EOS string", unwrapped.eos_token, head["eos_token"])
    obs, info = env.reset(seed=head["seed"], options={**head["options"], "question_id": head["question_id"]})
    _expect("reset", "the observation's SHA-256", observation_digest(obs), head["obs_sha256"])
    episode_return, done = 0.0, False
    for t, record in enumerate(steps, start=1):
        if record.get("type") != "step" or done:
            raise TraceMismatchError(f"line {t + 1} of the trace is not a step of the episode")
        obs, reward, terminated, truncated, info = env.step(record["action"])
        where = f"step {t}"
        _expect(where, "the observation's SHA-256", observation_digest(obs), record["obs_sha256"])
        _expect(where, "the reward", float(reward), record["reward"])
        _expect(where, "terminated", bool(terminated), record["terminated"])
        _expect(where, "truncated", bool(truncated), record["truncated"])
        recorded_search = record.get("search")
        _expect(where, "the search", info.get("search") is not None, recorded_search is not None)
        for field in _REPLAYED_SEARCH_FIELDS if recorded_search else ():
            _expect(where, f"the search's {field}", info["search"][field], recorded_search[field])
        episode_return += float(reward)
        done = terminated or truncated
    if not done:
        raise TraceMismatchError("the trace's steps end before the episode does")
    _expect("end", "the outcome", {key: info[key] for key in OUTCOME_KEYS if key in info}, end["outcome"])
    return episode_return
