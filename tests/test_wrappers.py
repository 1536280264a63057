"""The wrappers of issue #4 as specifications: the token view's invariants as properties of arbitrary
episodes (a tiny trained tokenizer and the real Qwen2.5 one), chat-template checks, budgets, traces that
replay bit for bit and reject tampering, episode statistics, and vector envs with NEXT_STEP autoreset."""

from __future__ import annotations

import copy
import json
import pickle
import socket
import threading
import time
import unicodedata
from itertools import groupby
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import uvicorn
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

import research_env  # noqa: F401  (registers the env ids)
from research_env import Document, ReSearchEnv, load_qa_dataset
from research_env.assets import DEMO_CORPUS, DEMO_DATASETS
from research_env.env import SearchPendingError
from research_env.retrieval.http import HTTPRetriever, RetrieverUnavailable
from research_env.retrieval.service import create_app
from research_env.tokenizer import CHAT_TEMPLATE, build_qwen25_tokenizer, qwen25_text_encoder
from research_env.vector import BatchedRetrievalVectorEnv
from wrappers import (
    Budget,
    ChatTemplate,
    ChatTemplateError,
    EpisodeStatistics,
    RecordTrace,
    TokenIds,
    TokenizationError,
    TokenizedEnv,
    TraceMismatchError,
    load_trace,
    replay,
)
from wrappers.prefix import Prefix
from wrappers.trace import _line

EOS = "<|endoftext|>"
SEARCH = "<think> Where is it? </think><search> capital of France </search>"
ANSWER = "<think> Paris. </think><answer> \\boxed{Paris} </answer>"
PROPERTY_SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeRetriever:
    """A handful of passages scored by word overlap: instant and deterministic, for the property tests
    (BM25 has its own tests, and one episode below runs on it). The passages carry what tokenisation
    must survive: a decomposed "ñ", rare CJK split over several byte tokens, emoji, and special-token
    and tag strings written as plain text."""

    identity = "fake:five-passages"
    PASSAGES = (
        ("p1", '"Paris"\nParis is the capital of France.'),
        ("p2", '"La Cañada Flintridge"\nLa Can\u0303ada Flintridge is a city in California.'),
        ("p3", '"中文"\n中文 means Chinese; 𠀀 is a rare character and 🧬 is DNA.'),
        ("p4", f'"Tokens"\nThis passage quotes {EOS}, <|im_end|> and <tool_call> as plain text.'),
        ("p5", '"Tags"\nA passage holding </result> and <search> tags, and a lone surrogate \udc80.'),
    )

    def __init__(self, bonus: float = 0.0) -> None:
        self.bonus = bonus  # a different bonus gives the same documents with other scores

    def search(self, queries: list[str], k: int) -> list[list[Document]]:
        results = []
        for query in queries:
            words = set(query.lower().split())
            docs = [
                Document(i, text, float(len(words & set(text.lower().split()))) + self.bonus)
                for i, text in self.PASSAGES
            ]
            results.append(sorted(docs, key=lambda d: -d.score)[:k])
        return results


def tiny_backend() -> Tokenizer:
    """A byte-level BPE of 512 ids trained on 300 passages of the demo corpus (about a second)."""
    with DEMO_CORPUS.open(encoding="utf-8") as f:
        texts = [json.loads(line)["contents"] for _, line in zip(range(300), f, strict=False)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=[EOS, "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return backend


def fast_tokenizer(backend: Tokenizer, eos: str = EOS, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=eos, chat_template=chat_template, clean_up_tokenization_spaces=False
    )


@pytest.fixture(scope="module")
def backend() -> Tokenizer:
    return tiny_backend()


@pytest.fixture(scope="module")
def tiny(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return fast_tokenizer(backend)


@pytest.fixture(scope="module")
def qwen() -> PreTrainedTokenizerFast:
    return build_qwen25_tokenizer(base=True)


@pytest.fixture(scope="module")
def musique():
    return load_qa_dataset(DEMO_DATASETS["musique"])


def fake_env(dataset, **kwargs) -> ReSearchEnv:
    return ReSearchEnv(dataset=dataset, retriever=FakeRetriever(), **kwargs)


# --- the token view --------------------------------------------------------------------------------


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def check_segments(tokenizer, obs: dict, info: dict, done: bool, truncated: bool = False) -> None:
    """Mask runs decode to exactly the text they stand for: env runs to the prompt and the result blocks
    (so no token straddles a boundary), policy runs to the policy's text between them. Only the open
    run of an unfinished episode may decode to more: a carried partial character, decoded as U+FFFD."""
    text, runs = (
        obs["text"],
        [
            (m, [i for i, _ in g])
            for m, g in groupby(zip(obs["input_ids"], obs["policy_mask"], strict=True), key=lambda p: p[1])
        ],
    )
    env_spans = [(0, info["prompt_length"]), *map(tuple, info["env_spans"])]
    cursor, k = 0, 0
    for n, (mask, ids) in enumerate(runs):
        decoded = decode(tokenizer, ids)
        if mask == 0:
            start, end = env_spans[k]
            assert (start, decoded) == (cursor, text[start:end])
            k, cursor = k + 1, end
            continue
        end = env_spans[k][0] if k < len(env_spans) else len(text)
        written, cursor = text[cursor:end], end
        if n == len(runs) - 1 and truncated:  # the env may have kept only the budget's worth of the last chunk
            assert decoded.startswith(written)
        elif n == len(runs) - 1 and not done:
            assert decoded.startswith(written)
            assert decoded == written or decoded.endswith("\ufffd")
        else:
            assert decoded == written
    assert (k, cursor) == (len(env_spans), len(text))


def run_checked(env: TokenizedEnv, actions: list, *, index: int = 0) -> list[tuple]:
    """Play ``actions`` (until the episode ends) checking the token invariants after every step."""
    tokenizer = env.tokenizer
    obs, info = env.reset(options={"index": index})
    assert sum(obs["policy_mask"]) == 0 and obs["text"] == env.unwrapped.prompt
    check_segments(tokenizer, obs, info, done=False)
    steps = []
    for action in actions:
        before = obs
        obs, reward, terminated, truncated, info = env.step(action)
        ids, mask, n = obs["input_ids"], obs["policy_mask"], len(before["input_ids"])
        assert len(ids) == len(mask) and obs in env.observation_space
        assert ids[:n] == before["input_ids"] and mask[:n] == before["policy_mask"]  # append-only
        new = ids[n:]
        n_policy = len(action) if not isinstance(action, str) else sum(mask[n:])
        assert mask[n:] == [1] * n_policy + [0] * (len(new) - n_policy)
        if isinstance(action, str):
            assert decode(tokenizer, new[:n_policy]) == action  # a text action is tokenised exactly
        else:
            assert new[:n_policy] == list(action)  # sampled ids are kept verbatim
        assert obs["text"] == env.unwrapped.prompt + env.unwrapped.response
        check_segments(tokenizer, obs, info, done=terminated or truncated, truncated=truncated)
        steps.append((action, obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return steps


PIECES = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<search>",
        "</search>",
        "</result>",
        "<answer>",
        "</answer>",
        "\\boxed{Paris}",
        " ",
        "\n",
        "capital of France",
        "é",
        "e\u0301",
        "n\u0303",
        "中文",
        "𠀀",
        "🧬",
        "\ufffd",
        "<|im_end|>",
        EOS,
    ]
)
HUGE = st.just("a huge chunk " * 700)  # 9.1k characters: more than the fuzzed envs' whole budget (below)
CHUNK_TEXT = st.lists(st.one_of(PIECES, st.text(max_size=6), HUGE), max_size=6).map("".join)
ENDINGS = st.sampled_from(["", "", "</search>", " </search>\n", EOS])


def episode_actions(tokenizer) -> st.SearchStrategy[list]:
    """Episodes as a generator could produce them, and worse: text chunks tokenised and cut at any id
    (splitting multi-byte characters over two steps), text actions, and arbitrary ids (raw bytes, EOS)."""
    byte_ids = sorted(tokenizer.convert_tokens_to_ids(c) for c in pre_tokenizers.ByteLevel.alphabet())
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    raw = st.lists(
        st.one_of(st.sampled_from(byte_ids), st.integers(0, len(tokenizer) - 1), st.just(eos_id)), max_size=5
    ).map(lambda ids: [ids])

    @st.composite
    def chunk(draw) -> list:
        text = draw(CHUNK_TEXT) + draw(ENDINGS)
        if draw(st.booleans()):
            return [text]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = draw(st.integers(0, len(ids)))
        return [ids[:cut], ids[cut:]]

    return st.lists(st.one_of(chunk(), chunk(), raw), min_size=1, max_size=8).map(lambda xs: [a for x in xs for a in x])


@pytest.fixture(scope="module")
def tiny_view(tiny, musique) -> TokenizedEnv:
    return TokenizedEnv(fake_env(musique, max_searches=3, max_context_chars=8192), tiny)


@pytest.fixture(scope="module")
def qwen_view(qwen, musique) -> TokenizedEnv:
    return TokenizedEnv(fake_env(musique, max_searches=3, max_context_chars=8192), qwen)


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(data=st.data())
def test_token_invariants_hold_on_arbitrary_episodes_with_a_tiny_trained_tokenizer(tiny_view, data):
    actions = data.draw(episode_actions(tiny_view.tokenizer))
    run_checked(tiny_view, actions, index=data.draw(st.integers(0, 99)))


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(data=st.data())
def test_token_invariants_hold_on_arbitrary_episodes_with_the_qwen25_tokenizer(qwen_view, data):
    actions = data.draw(episode_actions(qwen_view.tokenizer))
    run_checked(qwen_view, actions, index=data.draw(st.integers(0, 99)))


@settings(max_examples=200, deadline=None)
@given(text=st.text())
# NFC maps each of these on its own (CJK compatibility ideograph, ohm and angstrom signs); found by CI
@example(text="豈")
@example(text="Paris \u2126 and \u212b, then e\u0301 豈")
def test_text_is_encoded_so_that_it_decodes_back_unchanged(qwen_view, tiny_view, text):
    for view in (qwen_view, tiny_view):
        assert decode(view.tokenizer, view.encode_text(text)) == text


ADDED = st.sampled_from(["<tool_call>", "</tool_call>", "<|fim_pad|>", EOS, "<|im_end|>", "<|im_start|>"])


@settings(max_examples=200, deadline=None)
@given(text=st.lists(st.one_of(st.text(), ADDED), max_size=5).map("".join))
@example(text="\u2126 <tool_call> e\u0301")
def test_env_text_spells_added_tokens_and_is_otherwise_encoded_as_the_tokenizer_does(qwen_view, tiny_view, text):
    """Env text (``plain``) decodes back unchanged and holds no added token; where the text holds no added-token
    string and the normaliser keeps it, its ids are exactly the tokenizer's own (Qwen2.5's come from tiktoken)."""
    for view in (qwen_view, tiny_view):
        ids = view.encode_text(text, plain=True)
        assert decode(view.tokenizer, ids) == text and view._added_ids.isdisjoint(ids)
        if unicodedata.is_normalized("NFC", text) and not any(t in text for t in view._added_strings):
            assert ids == view.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert qwen25_text_encoder(qwen_view.tokenizer) is not None and qwen25_text_encoder(tiny_view.tokenizer) is None


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.one_of(st.text(), ADDED, st.sampled_from(["<", "<|", "|>", "<|im_", "\u2126"])), max_size=6))
@example(text=["<", EOS, ">", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"])
def test_a_prompt_is_encoded_with_its_added_tokens_as_the_tokenizer_does(qwen_view, tiny_view, text):
    """The prompt's ids (added tokens kept, split out leftmost-longest before the text between is encoded, by
    tiktoken for Qwen2.5) are the tokenizer's own wherever its normaliser keeps the text; and it decodes back."""
    text = "".join(text)
    for view in (qwen_view, tiny_view):
        ids = view.encode_text(text)
        assert decode(view.tokenizer, ids) == text
        if unicodedata.is_normalized("NFC", text):
            assert ids == view.tokenizer(text, add_special_tokens=False)["input_ids"]


#: UTF-8 a decoder must replace: a lone surrogate's bytes, an overlong form, truncated characters, a bare continuation.
INVALID_UTF8 = st.sampled_from([b"\xed\xa0\x80", b"\xf0\x9f", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe4\xb8", b"\x80"])


def arbitrary_ids(view: TokenizedEnv) -> st.SearchStrategy[list[int]]:
    """Id sequences of ``view``'s tokenizer: any ids, added ones, single bytes and runs of invalid UTF-8."""
    tokenizer = view.tokenizer
    byte_id = {b: tokenizer.convert_tokens_to_ids(c) for b, c in bytes_to_unicode().items()}
    run = st.one_of(
        st.integers(0, len(tokenizer) - 1).map(lambda i: [i]),
        st.sampled_from(sorted(view._added_ids)).map(lambda i: [i]),
        st.sampled_from(sorted(byte_id.values())).map(lambda i: [i]),
        INVALID_UTF8.map(lambda bad: [byte_id[b] for b in bad]),
        st.text(max_size=4).map(lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]),
    )
    return st.lists(run, max_size=8).map(lambda runs: [i for r in runs for i in r])


@settings(max_examples=300, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("view_name", ["qwen_view", "tiny_view"])
def test_decoding_is_the_tokenizers_own_on_arbitrary_ids(request, view_name, data):
    """The view's decoding (Qwen2.5's through its tiktoken ranks) equals the tokenizer's on any ids: partial and
    invalid UTF-8 cut anywhere, and added tokens between them."""
    view = request.getfixturevalue(view_name)
    ids = data.draw(arbitrary_ids(view))
    assert view._decode(ids) == decode(view.tokenizer, ids)


def test_a_character_split_over_two_actions_reaches_the_env_whole(qwen_view):
    first, *rest = qwen_view.tokenizer("𠀀", add_special_tokens=False)["input_ids"]
    assert rest, "the test needs a character of several byte tokens"
    (_, obs, *_), (_, obs2, *_) = run_checked(qwen_view, [[first], rest])
    assert obs["text"] == qwen_view.unwrapped.prompt and obs["policy_mask"][-1] == 1
    assert obs2["text"].endswith("𠀀")


def test_a_stop_string_followed_by_a_partial_character_does_not_search(qwen_view):
    partial = qwen_view.tokenizer("𠀀", add_special_tokens=False)["input_ids"][:1]
    search = qwen_view.tokenizer(SEARCH, add_special_tokens=False)["input_ids"]
    (_, obs, _, _, _, info), *_ = run_checked(qwen_view, [search + partial])
    assert info["num_searches"] == 0 and obs["text"].endswith("</search")  # ">" waits with the partial char
    steps = run_checked(qwen_view, [search + partial, [qwen_view.tokenizer.convert_tokens_to_ids(EOS)]])
    assert steps[-1][3] and steps[-1][1]["text"].endswith("</search>\ufffd" + EOS)  # terminated, never searched


def test_passages_cannot_inject_added_tokens(qwen_view, tiny_view):
    """Every added token counts, not only the special ones: Qwen's <tool_call> (151657) is an ordinary added
    token, which the tokenizer's split_special_tokens would have kept."""
    for view in (qwen_view, tiny_view):
        ((_, obs, *_),) = run_checked(view, ["<search> passage quotes plain text </search>"])
        assert f"quotes {EOS}, <|im_end|> and <tool_call> as" in obs["text"]
        env_ids = {i for i, m in zip(obs["input_ids"], obs["policy_mask"], strict=True) if m == 0}
        assert env_ids.isdisjoint(view.tokenizer.added_tokens_decoder)
    assert qwen_view.tokenizer.convert_tokens_to_ids("<tool_call>") == 151657


def test_a_lone_surrogate_is_a_clear_error_and_passages_never_carry_one(qwen_view):
    qwen_view.reset(options={"index": 0})
    with pytest.raises(TokenizationError, match="lone surrogate"):
        qwen_view.step("a \ud800 b")
    ((_, obs, *_),) = run_checked(qwen_view, ["<search> passage holding tags </search>"])
    assert "a lone surrogate \ufffd." in obs["text"]


def test_a_decomposed_character_stays_decomposed(qwen_view):
    ((_, obs, *_),) = run_checked(qwen_view, ["<search> La Flintridge city </search>"])
    assert "La Can\u0303ada" in obs["text"]  # Qwen's NFC would have composed it


def test_token_ids_out_of_the_vocabulary_are_rejected(tiny_view):
    tiny_view.reset(options={"index": 0})
    with pytest.raises(ValueError, match="token ids must lie in"):
        tiny_view.step([len(tiny_view.tokenizer)])
    assert TokenIds(3).contains([0, 2]) and not TokenIds(3).contains([3]) and TokenIds(3).contains((1,))


def test_observations_are_read_only_and_never_change_after_they_are_returned(qwen_view):
    """No step copies the context (the ids are views), yet a kept observation stays what it was: through later
    steps, a refused step and a reset; and it reads, compares, pickles and converts like the list it stands for."""
    tokenizer = qwen_view.tokenizer
    kept = [qwen_view.reset(options={"index": 0})[0]]
    for action in ["<think> a </think>", "<search> capital of France </search>", "<answer> x </answer>"]:
        kept.append(qwen_view.step(tokenizer.encode(action))[0])
    with pytest.raises(ValueError, match="token ids must lie in"):
        qwen_view.step([len(tokenizer)])
    snapshots = [(list(o["input_ids"]), list(o["policy_mask"])) for o in kept]
    qwen_view.step(tokenizer.encode(" more"))
    qwen_view.reset(options={"index": 1})
    qwen_view.step(tokenizer.encode("<search> Paris </search>"))
    for obs, (ids, mask) in zip(kept, snapshots, strict=True):
        assert obs["input_ids"] == ids and obs["policy_mask"] == mask and ids == obs["input_ids"]
        assert pickle.loads(pickle.dumps(obs))["input_ids"] == ids and type(copy.deepcopy(obs)["input_ids"]) is list
        assert (
            np.asarray(obs["input_ids"]).tolist() == ids
            and json.loads(json.dumps(obs, default=list))["policy_mask"] == mask
        )
    ids = kept[-1]["input_ids"]
    with pytest.raises(TypeError):
        ids[0] = 1
    with pytest.raises(AttributeError):
        ids.append(1)
    assert (
        ids[-1] == snapshots[-1][0][-1] and ids + [7] == snapshots[-1][0] + [7] and [7] + ids == [7] + snapshots[-1][0]
    )


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.integers(0, 9), max_size=12), n=st.integers(0, 12), data=st.data())
def test_a_prefix_reads_like_the_list_it_stands_for(items, n, data):
    n = min(n, len(items))
    view, expected = Prefix(items, n), items[:n]
    items.append(99)  # the owner appends: the view does not change
    index = data.draw(st.integers(-14, 14))
    window = slice(
        *data.draw(st.tuples(*[st.none() | st.integers(-14, 14)] * 2)), data.draw(st.sampled_from([None, 1, 2, -1]))
    )
    assert len(view) == n and list(view) == expected and view[window] == expected[window] and view == expected
    assert (view == [*expected, 0]) is False and view != items and repr(view) == repr(expected)
    assert (index in view) == (index in expected) and pickle.loads(pickle.dumps(view)) == expected
    if -n <= index < n:
        assert view[index] == expected[index]
    else:
        with pytest.raises(IndexError):
            view[index]


@pytest.mark.slow
def test_a_real_bm25_episode_keeps_the_token_invariants_and_replays(qwen, tmp_path):
    def stack():
        return Budget(TokenizedEnv(gym.make("ReSearch-MuSiQue-v0"), qwen), max_tokens=8192)

    env = RecordTrace(stack(), tmp_path)
    question = "Polish-Russian War"
    actions = [
        f"<think> I need facts. </think><search> {question} </search>",
        qwen(" <search> Cañada Flintridge </search>", add_special_tokens=False)["input_ids"],
        qwen(ANSWER + EOS, add_special_tokens=False)["input_ids"],
    ]
    steps = run_checked(env.env.env, actions)  # checked on the bare token view, then recorded through the stack
    assert [s[5]["num_searches"] for s in steps] == [1, 2, 2] and steps[-1][3]
    env.reset(options={"index": 0})
    for action in actions:
        *_, info = env.step(action)
    assert info["tokens_left"] == 8192 - len(steps[-1][1]["input_ids"])
    assert replay(env.trace_path, stack()) == steps[-1][2]


# --- budgets ---------------------------------------------------------------------------------------


def test_max_turns_truncates_after_that_many_chunks(musique):
    env = Budget(fake_env(musique), max_turns=2)
    env.reset(options={"index": 0})
    assert env.step("<think> one")[3] is False
    _, reward, terminated, truncated, info = env.step(" two")
    assert (reward, terminated, truncated, info["truncation_reason"]) == (0.0, False, True, "max_turns")
    assert info["f1"] == 0.0 and info["reason"] == "budget: max_turns"


def test_an_episode_ending_on_its_last_turn_is_not_truncated(musique):
    env = Budget(fake_env(musique), max_turns=1)
    env.reset(options={"index": 0})
    assert env.step(ANSWER + EOS)[2:4] == (True, False)


def test_max_tokens_counts_the_whole_context(tiny, musique):
    env = Budget(TokenizedEnv(fake_env(musique), tiny), max_tokens=10_000)
    obs, info = env.reset(options={"index": 0})
    assert info["tokens_left"] == 10_000 - len(obs["input_ids"])
    answer = tiny(ANSWER + EOS, add_special_tokens=False)["input_ids"]

    def play(max_tokens: int, *actions: list[int]) -> tuple:
        env.max_tokens = max_tokens
        env.reset(options={"index": 0})
        return [env.step(a) for a in actions][-1]

    prompt = len(obs["input_ids"])
    _, reward, terminated, truncated, info = play(prompt + len(answer), answer)
    assert terminated and not truncated and info["tokens_left"] == 0  # an EOS on the last allowed token counts
    _, reward, terminated, truncated, info = play(prompt + len(answer) - 1, answer)
    assert (reward, terminated, truncated, info["truncation_reason"]) == (0.0, False, True, "max_tokens")
    _, reward, terminated, truncated, info = play(prompt + 3, answer[:3])
    assert truncated and info["truncation_reason"] == "max_tokens"  # full, and no room left for an EOS


def test_max_tokens_needs_the_token_view_and_searches_are_the_envs_budget(musique):
    with pytest.raises(TypeError, match="TokenizedEnv"):
        Budget(fake_env(musique), max_tokens=8192)
    env = Budget(fake_env(musique, max_searches=0), max_turns=5)
    env.reset(options={"index": 0})
    assert env.step(SEARCH)[4]["truncation_reason"] == "max_searches"


# --- chat template ---------------------------------------------------------------------------------


def chat_env(dataset, tokenizer, **kwargs) -> ReSearchEnv:
    return fake_env(dataset, apply_chat=True, tokenizer=tokenizer, **kwargs)


def test_chat_messages_render_back_to_the_transcript(qwen, musique):
    env = ChatTemplate(chat_env(musique, qwen, eos_token="<|im_end|>"), qwen)
    _, info = env.reset(options={"index": 3})
    assert [m["role"] for m in info["messages"]] == ["system", "user"]
    assert info["messages"][1]["content"] == env.unwrapped.record.question
    env.step(SEARCH)
    *_, terminated, _, info = env.step(ANSWER + "<|im_end|>")
    assert terminated and info["messages"][-1] == {"role": "assistant", "content": env.unwrapped.response}


def test_chat_template_mismatches_are_errors(backend, musique):
    chatml = fast_tokenizer(backend, "<|im_end|>", CHAT_TEMPLATE)
    env = ChatTemplate(chat_env(musique, chatml), chatml)
    env.reset(options={"index": 0})
    env.step(SEARCH)  # the matching template passes
    other = fast_tokenizer(backend, "<|im_end|>", CHAT_TEMPLATE.replace("<|im_start|>", "<|im_start|> "))
    with pytest.raises(ChatTemplateError, match="prompt differs"):
        ChatTemplate(chat_env(musique, chatml), other).reset(options={"index": 0})
    drops_thinking = fast_tokenizer(
        backend, "<|im_end|>", CHAT_TEMPLATE.replace("message['content']", "message['content'].split('</think>')[-1]")
    )
    env = ChatTemplate(chat_env(musique, drops_thinking), drops_thinking)
    env.reset(options={"index": 0})
    with pytest.raises(ChatTemplateError, match="verbatim"):
        env.step(SEARCH)
    with pytest.raises(ChatTemplateError, match="one token"):
        ChatTemplate(chat_env(musique, chatml, eos_token="</answer>"), chatml)
    with pytest.raises(ChatTemplateError, match="apply_chat=True"):
        ChatTemplate(fake_env(musique), chatml)


# --- traces and replay -----------------------------------------------------------------------------


@pytest.fixture
def recorded(musique, tmp_path) -> tuple[Path, float]:
    env = RecordTrace(fake_env(musique, top_k=2), tmp_path)
    env.reset(seed=7)
    env.step(SEARCH)
    _, reward, terminated, _, _ = env.step(ANSWER + EOS)
    assert terminated
    return env.trace_path, reward


def rewrite(path: Path, records: list[dict], *, reseal: bool) -> Path:
    """Write records back; with ``reseal`` the end line's digest is recomputed, as a forger would."""
    if reseal:
        import hashlib

        records[-1]["sha256"] = hashlib.sha256("".join(map(_line, records[:-1])).encode()).hexdigest()
    path.write_text("".join(map(_line, records)), encoding="utf-8")
    return path


def test_a_recorded_episode_replays_bit_for_bit(recorded, musique):
    path, reward = recorded
    head, search, answer, end = load_trace(path)
    assert (head["seed"], head["index"], head["top_k"]) == (7, FakeRetriever.identity, 2)
    assert search["search"]["query"] == "capital of France" and search["search"]["doc_ids"][0] == "p1"
    assert search["search"]["latency_s"] >= 0 and answer["action"] == ANSWER + EOS
    assert end["outcome"]["answer"] == "Paris" and end["outcome"]["format_ok"] and reward > 0
    assert replay(path, fake_env(musique, top_k=2)) == reward


@pytest.mark.parametrize(
    ("field", "value"), [("action", ANSWER.replace("Paris", "Lyon") + EOS), ("reward", 0.5), ("obs_sha256", "0" * 64)]
)
def test_an_edited_trace_is_rejected_even_when_resealed(recorded, musique, field, value):
    path, _ = recorded
    records = load_trace(path)
    records[2][field] = value
    with pytest.raises(TraceMismatchError, match="altered"):
        replay(rewrite(path, [dict(r) for r in records], reseal=False), fake_env(musique, top_k=2))
    with pytest.raises(TraceMismatchError, match="step 2"):
        replay(rewrite(path, records, reseal=True), fake_env(musique, top_k=2))


def test_edits_the_env_cannot_reproduce_are_caught_by_the_digest(recorded, musique):
    path, _ = recorded
    records = load_trace(path)
    records[1]["search"]["latency_s"] = 0.0
    with pytest.raises(TraceMismatchError, match="altered"):
        replay(rewrite(path, records, reseal=False), fake_env(musique, top_k=2))


def test_a_cut_or_extended_trace_is_rejected(recorded, musique):
    path, _ = recorded
    records = load_trace(path)
    with pytest.raises(TraceMismatchError, match="incomplete"):
        replay(records[:-1], fake_env(musique, top_k=2))
    with pytest.raises(TraceMismatchError, match="end before the episode"):
        replay(rewrite(path, records[:2] + records[-1:], reseal=True), fake_env(musique, top_k=2))
    with pytest.raises(TraceMismatchError, match="not a step"):
        replay(rewrite(path, [*records[:-1], records[2], records[-1]], reseal=True), fake_env(musique, top_k=2))


def test_a_different_index_or_retrieval_is_reported(recorded, musique):
    path, _ = recorded

    class OtherIndex(FakeRetriever):
        identity = "fake:another-index"

    with pytest.raises(TraceMismatchError, match="index identity"):
        replay(path, ReSearchEnv(dataset=musique, retriever=OtherIndex(), top_k=2))
    with pytest.raises(TraceMismatchError, match="step 1: the search's scores"):
        replay(path, ReSearchEnv(dataset=musique, retriever=FakeRetriever(bonus=1.0), top_k=2))


def test_traces_are_never_overwritten(musique, tmp_path):
    RecordTrace(fake_env(musique), tmp_path).reset(seed=0)
    with pytest.raises(FileExistsError):
        RecordTrace(fake_env(musique), tmp_path).reset(seed=0)


# --- statistics and vector envs --------------------------------------------------------------------


def test_episode_statistics(tiny, musique):
    env = EpisodeStatistics(TokenizedEnv(fake_env(musique), tiny))
    env.reset(options={"index": 0})
    *_, info = env.step(SEARCH)
    assert "episode" not in info
    latency = info["search"]["latency_s"]
    obs, reward, *_, info = env.step(ANSWER + EOS)
    episode = info["episode"]
    assert (episode["r"], episode["l"], episode["searches"]) == (reward, 2, 1)
    assert episode["response_tokens"] == sum(obs["policy_mask"]) > 0
    assert episode["retrieval_s"] == latency and episode["t"] >= episode["env_s"] >= episode["retrieval_s"]


def training_stack(dataset: str, tokenizer, trace_dir: Path, worker: int) -> gym.Env:
    env = TokenizedEnv(fake_env(load_qa_dataset(dataset)), tokenizer)
    return EpisodeStatistics(
        RecordTrace(Budget(env, max_tokens=4096, max_turns=3), trace_dir, name_prefix=f"worker{worker}")
    )


@pytest.mark.parametrize("vector_env", [SyncVectorEnv, AsyncVectorEnv, BatchedRetrievalVectorEnv])
def test_the_stack_runs_in_vector_envs_with_next_step_autoreset(vector_env, tiny, musique, tmp_path):
    dataset = str(DEMO_DATASETS["musique"])
    fns = [lambda i=i: training_stack(dataset, tiny, tmp_path, i) for i in range(2)]
    kwargs = {"shared_memory": False} if vector_env is AsyncVectorEnv else {}
    envs = vector_env(fns, autoreset_mode=AutoresetMode.NEXT_STEP, **kwargs)
    try:
        obs, _ = envs.reset(seed=5)
        assert [sum(m) for m in obs["policy_mask"]] == [0, 0]
        # env 0 searches then answers; env 1 answers at once, then is reset on the next step
        obs, rewards, terminated, truncated, infos = envs.step([SEARCH, ANSWER + EOS])
        assert list(terminated) == [False, True] and list(infos["_episode"]) == [False, True]
        assert infos["episode"]["searches"][1] == 0 and infos["episode"]["response_tokens"][1] > 0
        obs, rewards, terminated, truncated, infos = envs.step([ANSWER + EOS, "ignored: this env resets"])
        assert list(terminated) == [True, False] and sum(obs["policy_mask"][1]) == 0  # NEXT_STEP autoreset
        assert infos["episode"]["searches"][0] == 1 and list(infos["_episode"]) == [True, False]
        obs, rewards, terminated, truncated, infos = envs.step(["also ignored", "<think> thinking"])
        assert sum(obs["policy_mask"][0]) == 0 and sum(obs["policy_mask"][1]) > 0
        if vector_env is BatchedRetrievalVectorEnv:
            assert envs.retriever_calls == 1  # the one search went through the batched path
    finally:
        envs.close()
    traces = sorted(tmp_path.glob("*.jsonl"))
    assert [p.name for p in traces] == [
        "worker0-000000.jsonl",
        "worker0-000001.jsonl",
        "worker1-000000.jsonl",
        "worker1-000001.jsonl",
    ]
    for path in (traces[0], traces[2]):  # the finished episodes replay; the open ones are incomplete
        replay(path, Budget(TokenizedEnv(fake_env(musique), tiny), max_tokens=4096, max_turns=3))
    with pytest.raises(TraceMismatchError, match="incomplete"):
        replay(traces[3], Budget(TokenizedEnv(fake_env(musique), tiny), max_tokens=4096, max_turns=3))


# --- recovery after a retriever outage (issue 12, item 3) -------------------------------------------------------


class SurrogateFreeRetriever(FakeRetriever):
    """FakeRetriever without its lone-surrogate passage, which the service cannot send as JSON (issue 12 item 4)."""

    identity = "fake:four-passages"
    PASSAGES = tuple(p for p in FakeRetriever.PASSAGES if p[0] != "p5")


class LiveService:
    """The real retrieval service (FastAPI + uvicorn on 127.0.0.1) over SurrogateFreeRetriever, in a thread, that
    can be stopped and started again on the same port."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveService:
        app = create_app(SurrogateFreeRetriever())
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def service():
    live = LiveService().start()
    yield live
    live.stop()


def test_a_failed_search_is_retried_under_the_whole_stack_and_replays(service, tiny, musique, tmp_path):
    def stack(client):
        env = ReSearchEnv(dataset=musique, retriever=client)
        return EpisodeStatistics(Budget(TokenizedEnv(env, tiny), max_tokens=8192, max_turns=8))

    client = HTTPRetriever(service.url, deadline_s=1.0, backoff_s=0.05)
    env = RecordTrace(stack(client), tmp_path)
    ids = [
        tiny(text + end, add_special_tokens=False)["input_ids"]
        for text, end in ((SEARCH, ""), ("<search> La Flintridge city </search>", ""), (ANSWER, EOS))
    ]
    env.reset(options={"index": 0})
    first = env.step(ids[0])[0]
    service.stop()
    with pytest.raises(RetrieverUnavailable):
        env.step(ids[1])
    assert env.unwrapped.pending_query == "La Flintridge city"
    with pytest.raises(SearchPendingError, match=r"step\(\[\]\)"):
        env.step(ids[2])  # refused, and nothing of it is kept
    service.start()
    obs, reward, terminated, truncated, info = env.step([])  # the retry
    assert obs["input_ids"][: len(first["input_ids"])] == first["input_ids"]
    assert obs["input_ids"][len(first["input_ids"]) :][: len(ids[1])] == ids[1]
    assert "La Can\u0303ada Flintridge" in obs["text"] and info["num_searches"] == 2 and not (terminated or truncated)
    check_segments(tiny, obs, info, done=False)
    obs, reward, terminated, truncated, info = env.step(ids[2])
    assert terminated and info["format_ok"] and info["episode"]["l"] == 3
    check_segments(tiny, obs, info, done=True)
    assert [r["action"] for r in load_trace(env.trace_path)[1:-1]] == ids
    with HTTPRetriever(service.url, deadline_s=5.0) as again:
        assert replay(env.trace_path, stack(again)) == reward
    client.close()


def test_a_failed_search_is_retried_by_the_text_env(service, musique):
    client = HTTPRetriever(service.url, deadline_s=1.0, backoff_s=0.05)
    env = ReSearchEnv(dataset=musique, retriever=client)
    env.reset(options={"index": 0})
    service.stop()
    with pytest.raises(RetrieverUnavailable):
        env.step(SEARCH)
    with pytest.raises(SearchPendingError):
        env.step(ANSWER)
    service.start()
    obs, _, _, _, info = env.step("")
    assert obs == env.prompt + SEARCH + obs[len(env.prompt + SEARCH) :] and obs.endswith("</result>")
    assert info["search"]["query"] == "capital of France" and env.pending_query is None
    client.close()
