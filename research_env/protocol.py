"""The ReSearch text protocol (SPEC §1–§2): tags, stop strings, search-query extraction, result
formatting, the format check and answer extraction. Pure functions on strings, so the env, the
evaluation and the trainer all apply the very same rules."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

#: Generation backends stop on these strings (and on the EOS token) so that the env can run the search.
STOP_STRINGS: tuple[str, ...] = (SEARCH_CLOSE,)

#: Qwen2.5 ends a base-model response with ``<|endoftext|>`` and a chat turn with ``<|im_end|>``.
BASE_EOS_TOKEN = "<|endoftext|>"
CHAT_EOS_TOKEN = "<|im_end|>"

#: ReSearch's training sends an empty query to the retriever while its evaluation sends "nothing to
#: search"; we do neither: an empty query is never sent, and the env writes this notice as the result.
EMPTY_QUERY_NOTICE = "The search query was empty: nothing was searched."
#: Written when the retriever found no document, so that an empty result is never silent.
NO_RESULTS_NOTICE = "No documents matched the search query."

_ANSWER_SPAN = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)
_BOXED = re.compile(r"\\boxed\{|\\fbox\{|\\boxed ")
_SURROGATE = re.compile("[\ud800-\udfff]")


class ChunkKind(enum.Enum):
    """What the env does with an action chunk, decided only by how the chunk ends (SPEC §1)."""

    SEARCH = "search"  # ends with </search>: run the query, append a result block
    END = "end"  # ends with the EOS string: the model ended its response; score it
    CONTINUE = "continue"  # neither: the generator hit its per-call limit; the response goes on


def classify_chunk(chunk: str, eos_token: str) -> ChunkKind:
    """Classify an action chunk. EOS wins over ``</search>``: a response the model ended is scored.

    Trailing white space after ``</search>`` is tolerated because BPE tokens such as ``">\\n"`` can
    carry it past a stop string.
    """
    if eos_token and chunk.endswith(eos_token):
        return ChunkKind.END
    if chunk.rstrip().endswith(SEARCH_CLOSE):
        return ChunkKind.SEARCH
    return ChunkKind.CONTINUE


def extract_search_query(policy_text: str) -> str:
    """The query of a search call: the text between the last ``<search>`` and the last ``</search>``.

    ``policy_text`` is what the policy wrote since the env last wrote (the query of a chunk may span
    several chunks). Returns ``""`` when there is no well-ordered pair: the caller treats that as an
    empty query rather than guessing.
    """
    end = policy_text.rfind(SEARCH_CLOSE)
    if end < 0:
        return ""
    start = policy_text.rfind(SEARCH_OPEN, 0, end)
    if start < 0:
        return ""
    return policy_text[start + len(SEARCH_OPEN) : end].strip()


def format_result(documents: Sequence[str]) -> str:
    """The env-written block that follows a search: a leading space, then ``<result>``, the documents'
    contents joined by a blank line (no numbering), and ``</result>`` — ReSearch's exact layout, so
    released checkpoints see what they were trained on."""
    body = "\n\n".join(documents).strip() or NO_RESULTS_NOTICE
    return f" {RESULT_OPEN}\n{body}\n{RESULT_CLOSE}"


def find_lone_surrogate(text: str) -> int:
    """Where ``text`` holds a lone UTF-16 surrogate (U+D800–U+DFFF: not a character, so not valid UTF-8 and
    not encodable by any tokenizer, JSON encoder or HTTP client), or -1."""
    if text.isascii():
        return -1
    match = _SURROGATE.search(text)
    return match.start() if match else -1


def replace_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (see :func:`find_lone_surrogate`) as U+FFFD."""
    if find_lone_surrogate(text) < 0:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@dataclass(frozen=True)
class FormatVerdict:
    """Whether a response follows the tag protocol, and if not, the first rule it breaks."""

    ok: bool
    reason: str


def policy_view(response: str, env_spans: Sequence[tuple[int, int]]) -> str:
    """``response`` with each env-written span (a result block; offsets into ``response``) read as an empty
    ``" <result></result>"``: what the format check and the answer extraction read, so that a retrieved
    passage holding ``<think>``, ``<answer>`` or ``\\boxed{}`` cannot change the reward. The tags stay, because
    the format rule "each ``</search>`` is followed by ``<result>…</result>``" is about where the env answered."""
    pieces, cursor = [], 0
    for start, end in env_spans:
        if not cursor <= start <= end <= len(response):
            raise ValueError(
                f"env span ({start}, {end}) is not an ordered span of the {len(response)}-character "
                "response; pass the env's info['env_spans'] shifted by info['prompt_length']"
            )
        pieces += [response[cursor:start], f" {RESULT_OPEN}{RESULT_CLOSE}"]
        cursor = end
    pieces.append(response[cursor:])
    return "".join(pieces)


def check_format(response: str) -> FormatVerdict:
    """The format gate of ReSearch's reward (SPEC §2.2); ``response`` is the assistant's text only."""
    n_think = response.count(THINK_OPEN)
    if n_think != response.count(THINK_CLOSE):
        return FormatVerdict(False, "<think> and </think> are not paired")
    if n_think == 0:
        return FormatVerdict(False, "no <think> block")
    if response.count(ANSWER_OPEN) != 1 or response.count(ANSWER_CLOSE) != 1:
        return FormatVerdict(False, "need exactly one <answer> and one </answer>")
    cursor = 0
    while (search_at := response.find(SEARCH_OPEN, cursor)) >= 0:
        search_end = response.find(SEARCH_CLOSE, search_at)
        result_at = response.find(RESULT_OPEN, search_at)
        result_end = response.find(RESULT_CLOSE, result_at) if result_at >= 0 else -1
        if min(search_end, result_at, result_end) < 0:
            return FormatVerdict(False, "a <search> is not followed by </search>, <result>, </result>")
        if not search_at < search_end < result_at < result_end:
            return FormatVerdict(False, "search and result tags are out of order")
        cursor = result_end
    answer_at, answer_end = response.find(ANSWER_OPEN), response.find(ANSWER_CLOSE)
    if answer_at > answer_end:
        return FormatVerdict(False, "</answer> comes before <answer>")
    answer_span = response[answer_at:answer_end]
    if "\\boxed{" not in answer_span or "}" not in answer_span:
        return FormatVerdict(False, "the answer has no \\boxed{}")
    return FormatVerdict(True, "format is correct")


def extract_answer_span(response: str) -> str | None:
    """The text inside the first ``<answer>…</answer>``, or None."""
    match = _ANSWER_SPAN.search(response)
    return match.group(1) if match else None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (brace-matched), ``\\fbox{…}`` or ``\\boxed …`` in ``text``.

    ``\\boxed x`` (LaTeX's brace-less form) runs to the next ``$`` or the end. None when there is no
    box or its braces never close.
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    if last.group().endswith(" "):
        return text[last.end() :].split("$", 1)[0]
    depth = 1
    for i in range(last.end(), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[last.end() : i]
    return None


def extract_answer(response: str) -> str | None:
    """The final answer: the last box inside the first answer span (SPEC §2.4), or None."""
    span = extract_answer_span(response)
    return None if span is None else last_boxed(span)
