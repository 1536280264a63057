"""Answer metrics and the ReSearch episode reward (SPEC §2).

One implementation of the HotpotQA/ReSearch normalisation, token F1, exact match and cover-EM
("acc"), used by the env, the evaluation and the trainer alike. The reward is pluggable: any
callable taking an :class:`EpisodeScore` and returning a float.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from research_env.protocol import check_format, extract_answer, policy_view

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
#: Answers of these kinds only match themselves: "no" must not get partial credit against "yes".
_CLOSED_ANSWERS = frozenset({"yes", "no", "noanswer"})
#: ReSearch gives a format-correct but wrong answer this much, so that format is learned first.
FORMAT_ONLY_REWARD = 0.1


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse white space."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _as_list(golden_answers: str | Sequence[str]) -> Sequence[str]:
    return [golden_answers] if isinstance(golden_answers, str) else golden_answers


def _token_f1(prediction: str, gold: str) -> float:
    if (prediction in _CLOSED_ANSWERS or gold in _CLOSED_ANSWERS) and prediction != gold:
        return 0.0
    pred_tokens, gold_tokens = prediction.split(), gold.split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """Token F1 (multiset overlap) of the normalised answers, the best over the gold answers."""
    pred = normalize_answer(prediction)
    return max((_token_f1(pred, normalize_answer(g)) for g in _as_list(golden_answers)), default=0.0)


def exact_match(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _as_list(golden_answers)))


def cover_exact_match(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """``acc``: 1.0 when a normalised gold answer is a substring of the normalised prediction."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in _as_list(golden_answers)))


@dataclass(frozen=True)
class EpisodeOutcome:
    """How an episode ended, as its last ``info`` reports it (SPEC §9): the one schema of those keys, built by
    :meth:`EpisodeScore.outcome` or :meth:`budget_stop` and read back with :meth:`from_info`.

    ``truncation_reason`` is set only when a budget ended the episode (then every score is zero).
    """

    f1: float
    em: float
    acc: float
    format_ok: bool
    answer: str | None
    reason: str
    golden_answers: tuple[str, ...]
    truncation_reason: str | None = None

    @classmethod
    def budget_stop(cls, budget: str, golden_answers: Sequence[str]) -> EpisodeOutcome:
        """A budget (``max_searches``, ``max_tokens``, …) cut the response: reward 0, as in ReSearch."""
        return cls(0.0, 0.0, 0.0, False, None, f"budget: {budget}", tuple(golden_answers), budget)

    def info(self) -> dict[str, Any]:
        """The ``info`` keys of an episode's end (``num_searches`` comes from the env)."""
        info = {
            "f1": self.f1,
            "em": self.em,
            "acc": self.acc,
            "format_ok": self.format_ok,
            "answer": self.answer,
            "reason": self.reason,
            "golden_answers": list(self.golden_answers),
        }
        if self.truncation_reason is not None:
            info["truncation_reason"] = self.truncation_reason
        return info

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> EpisodeOutcome:
        """Read the outcome back from the last ``info`` of an episode."""
        if missing := [k for k in ("f1", "em", "acc", "format_ok", "answer", "reason") if k not in info]:
            raise KeyError(
                f"info has no {missing}: only the info of a step that ended the episode (terminated or "
                "truncated) holds the outcome"
            )
        return cls(
            float(info["f1"]),
            float(info["em"]),
            float(info["acc"]),
            bool(info["format_ok"]),
            info["answer"],
            str(info["reason"]),
            tuple(info.get("golden_answers", ())),
            info.get("truncation_reason"),
        )


@dataclass(frozen=True)
class EpisodeScore:
    """Everything the reward may depend on, computed once per finished response.

    ``reward`` is ReSearch's: 0 unless the format holds and the model ended with EOS; then the F1,
    or 0.1 when the F1 is 0. The format and the answer are read from the policy's text only
    (:func:`~research_env.protocol.policy_view` of ``env_spans``); ``response`` is the whole of it,
    result blocks included, for reward functions that want to read it otherwise.
    """

    response: str
    golden_answers: tuple[str, ...]
    answer: str | None
    format_ok: bool
    ended_with_eos: bool
    reason: str
    em: float
    f1: float
    acc: float
    reward: float
    eos_token: str = ""
    env_spans: tuple[tuple[int, int], ...] = ()

    @property
    def outcome(self) -> EpisodeOutcome:
        return EpisodeOutcome(self.f1, self.em, self.acc, self.format_ok, self.answer, self.reason, self.golden_answers)


def score_response(
    response: str, golden_answers: str | Sequence[str], eos_token: str, env_spans: Sequence[tuple[int, int]] = ()
) -> EpisodeScore:
    """Score the assistant's part of a transcript (prompt excluded, EOS included if the model emitted it).

    ``env_spans`` are the ``(start, end)`` offsets in ``response`` of the blocks the env wrote; the format
    check and the answer extraction skip their contents, so retrieved passages cannot change the score.
    With no spans the whole response is read, as ReSearch's ``re_search.py`` does.
    """
    golden = tuple(_as_list(golden_answers))
    policy_text = policy_view(response, env_spans)
    verdict = check_format(policy_text)
    ended = bool(eos_token) and response.endswith(eos_token)
    body = policy_text[: -len(eos_token)] if ended else policy_text
    answer = extract_answer(body)
    em = f1 = acc = 0.0
    if answer is not None:
        em, f1, acc = exact_match(answer, golden), f1_score(answer, golden), cover_exact_match(answer, golden)
    if not verdict.ok:
        reward, reason = 0.0, f"bad format: {verdict.reason}"
    elif not ended:
        reward, reason = 0.0, "the response did not end with the EOS token"
    elif answer is None:
        reward, reason = 0.0, "no answer could be extracted from <answer>"
    elif f1 > 0:
        reward, reason = f1, "correct answer"
    else:
        reward, reason = FORMAT_ONLY_REWARD, "wrong answer in a correct format"
    return EpisodeScore(
        response=response,
        golden_answers=golden,
        answer=answer,
        format_ok=verdict.ok,
        ended_with_eos=ended,
        reason=reason,
        em=em,
        f1=f1,
        acc=acc,
        reward=reward,
        eos_token=eos_token,
        env_spans=tuple(env_spans),
    )


RewardFn = Callable[[EpisodeScore], float]


def re_search_reward(score: EpisodeScore) -> float:
    """ReSearch's reward (the default): format- and EOS-gated F1 with 0.1 for a wrong answer."""
    return score.reward


def re_search_transcript_reward(score: EpisodeScore) -> float:
    """ReSearch's rule read exactly as ``re_search.py`` reads it: over the whole response, retrieved passages
    included, so a passage holding ``<think>``, ``<answer>`` or ``\\boxed{}`` can change it. For reproducing
    ReSearch's numbers: the two agree whenever no result block holds a tag, a box command, a brace or a ``$``
    (all that the format check and the answer parser read)."""
    return score_response(score.response, score.golden_answers, score.eos_token).reward


def exact_match_reward(score: EpisodeScore) -> float:
    """Exact match gated by the same format and EOS rules: a sparser, Search-R1-like signal."""
    return score.em if score.format_ok and score.ended_with_eos else 0.0


REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "re_search": re_search_reward,
    "re_search_transcript": re_search_transcript_reward,
    "exact_match": exact_match_reward,
}


def get_reward_fn(reward: str | RewardFn | None) -> RewardFn:
    """Resolve a reward given by name, as a callable, or None (the ReSearch default)."""
    if reward is None:
        return re_search_reward
    if callable(reward):
        return reward
    try:
        return REWARD_FUNCTIONS[reward]
    except KeyError:
        raise ValueError(f"unknown reward {reward!r}; known: {sorted(REWARD_FUNCTIONS)} or pass a callable") from None
