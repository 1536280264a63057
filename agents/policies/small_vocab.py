"""A small byte-level BPE vocabulary and a ~1.4M-parameter Qwen2 for learning experiments on CPU.

With Qwen2.5's 151k vocabulary, sampling and the learner's log-softmax dominate a CPU iteration (40–90 s);
with 8,192 tokens a GRPO iteration of 80 rollouts takes seconds. The BPE is trained on the oracle traces of
the *training* questions only: one trained on every question would hold the held-out answers as tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import gymnasium as gym
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from agents.evaluation.oracle import run_oracle_episode
from agents.policies.models import qwen2_config, random_causal_lm
from research_env import protocol
from research_env.worlds import spell_out_names

#: The protocol's tags become single tokens, so that a tag is one sampling decision, not five.
PROTOCOL_TAGS: tuple[str, ...] = (
    protocol.THINK_OPEN,
    protocol.THINK_CLOSE,
    protocol.SEARCH_OPEN,
    protocol.SEARCH_CLOSE,
    protocol.RESULT_OPEN,
    protocol.RESULT_CLOSE,
    protocol.ANSWER_OPEN,
    protocol.ANSWER_CLOSE,
)
EOS_TOKEN = protocol.BASE_EOS_TOKEN  # what the base-prompt env expects at the end of a response
SMALL_VOCAB_SIZE = 8192


def oracle_trace_texts(env: gym.Env, question_ids: Iterable[str]) -> list[str]:
    """The whole transcript (prompt, oracle actions, result blocks) of one oracle episode per question."""
    texts = []
    for qid in question_ids:
        run_oracle_episode(env, qid)
        texts.append(env.unwrapped.prompt + env.unwrapped.response)
    return texts


def train_small_tokenizer(
    texts: Sequence[str], vocab_size: int = SMALL_VOCAB_SIZE, split_names: bool = False
) -> PreTrainedTokenizerFast:
    """A byte-level BPE (any text round-trips exactly, as ``TokenizedEnv`` requires) with the protocol tags as
    added tokens and ``<|endoftext|>`` as the EOS and padding token.

    ``split_names`` trains on the texts with synthetic-world names spelled out as syllables
    (``research_env.worlds.spell_out_names``): merged whole, training names would be single tokens and held-out
    names unfamiliar pieces, and a small policy then fails to copy the names it has never seen.
    """
    if split_names:
        texts = [spell_out_names(text) for text in texts]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(PROTOCOL_TAGS),
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in PROTOCOL_TAGS])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)


def small_qwen2(tokenizer: PreTrainedTokenizerFast, seed: int = 0, max_positions: int = 4096) -> PreTrainedModel:
    """A randomly initialised Qwen2 of width 128, 2 layers, tied embeddings: about 1.4M parameters over an
    8,192-token vocabulary."""
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    config = qwen2_config(
        len(tokenizer),
        eos,
        eos,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
    )
    return random_causal_lm(config, seed)
