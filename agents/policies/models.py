"""The embedded default policy: a tiny random Qwen2-architecture causal LM over the real Qwen2.5
vocabulary, created once with a fixed seed and cached, so that every agent and test runs offline.
Any local Hugging Face checkpoint directory loads through the same function."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config

from research_env.staging import write_once
from research_env.tokenizer import build_qwen25_tokenizer, default_cache_root, load_tokenizer

TINY_MODEL_NAME = "tiny-qwen2"
#: Fixed so that every machine creates the very same random weights.
TINY_MODEL_SEED = 0
#: ReSearch's context budget (prompt, generated and retrieved tokens together).
TINY_MAX_POSITIONS = 8192


def qwen2_config(
    vocab_size: int,
    eos_token_id: int | list[int],
    pad_token_id: int,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    max_position_embeddings: int,
    head_dim: int = 32,
) -> Qwen2Config:
    """A Qwen2-architecture config for a model built here from scratch: tied embeddings, no BOS, float32.
    Head size 32 by default: vLLM's CPU attention needs >= 32."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        dtype="float32",
    )


def random_causal_lm(config: Qwen2Config, seed: int) -> PreTrainedModel:
    """Random weights from ``seed``, without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def tiny_qwen2_config(vocab_size: int, eos_token_ids: list[int], pad_token_id: int) -> Qwen2Config:
    """Two layers of width 64. Embeddings are tied: the 151,665-token vocabulary is almost all of the 10M
    parameters."""
    return qwen2_config(
        vocab_size,
        eos_token_ids,
        pad_token_id,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=TINY_MAX_POSITIONS,
    )


def tiny_qwen2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The tiny model's directory (``<cache>/models/tiny-qwen2``), created on first use.

    Written to a temporary sibling and moved into place, so concurrent processes never load a
    half-written checkpoint. The tokenizer is saved alongside, which makes the directory a complete
    checkpoint that vLLM or an OpenAI-compatible server can serve too.
    """
    target = Path(cache_dir if cache_dir is not None else default_cache_root()) / "models" / TINY_MODEL_NAME

    def write(staging: Path) -> None:
        tokenizer = build_qwen25_tokenizer(base=True)
        eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
        model = random_causal_lm(tiny_qwen2_config(len(tokenizer), eos_ids, tokenizer.pad_token_id), TINY_MODEL_SEED)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return write_once(target, write, complete="config.json")


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """``None`` or ``"tiny"`` gives the embedded tiny model; anything else must be a local checkpoint."""
    if model is None or str(model) in ("tiny", TINY_MODEL_NAME):
        return tiny_qwen2_path()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model {str(model)!r} is not a local Hugging Face checkpoint (no config.json there); the hub is not "
            "used: download the checkpoint and pass its directory, or leave --model out for the tiny default"
        )
    return path


def load_causal_lm(
    model: str | os.PathLike | None = None, *, device: str | None = None, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, Any]:
    """Load a causal LM and its tokenizer (the checkpoint's own, else the offline Qwen2.5 one) for inference."""
    path = resolve_model_path(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).to(device).eval()
    return lm, load_policy_tokenizer(path)


def load_policy_tokenizer(model: str | os.PathLike | None = None) -> Any:
    """The tokenizer a policy was trained with: the checkpoint's own, else the offline Qwen2.5 one. Envs, learners
    and every generation backend use this one, so that token ids mean the same everywhere."""
    path = resolve_model_path(model)
    return load_tokenizer(path) if (path / "tokenizer_config.json").is_file() else build_qwen25_tokenizer()
