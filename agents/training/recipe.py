"""The recipe under which GRPO visibly teaches a small policy to search on a laptop CPU: the synthetic world it
plays, the settings it trains with and its warm start. Both trainers' zero-argument run and
``benchmarks/learning.py --task synthetic`` use it; every value is one flag away from the paper's."""

from __future__ import annotations

from typing import Any

#: Keywords of ``ReSearch-Synthetic-v0``. 4,000 one-hop questions per split, so that SFT sees each training
#: question rarely and must learn to copy names from passages instead of memorising answers (with 500
#: questions x 20 epochs the 0.6M-parameter policy memorised them and never answered a held-out question);
#: a one-line prompt, because the paper's instructions mean nothing to a policy trained from scratch and were
#: four fifths of every sequence's tokens; top-1 passages, which the oracle needs and which keep contexts short.
SYNTHETIC_WORLD: dict[str, Any] = {
    "num_questions": 4000,
    "num_entities": 16000,
    "top_k": 1,
    "template": "User: {prompt}\nAssistant:",
}

#: What the zero-argument run changes from the paper's settings (``GRPOSettings``): 16 questions x 5 rollouts
#: per iteration, a learning rate for a 0.6M-parameter model, short chunks, two optimizer steps per batch on the
#: groups that carry signal, and a short warmup.
SETTINGS: dict[str, Any] = {
    "prompts_per_batch": 16,
    "group_size": 5,
    "lr": 3e-4,
    "warmup_iterations": 4,
    "num_minibatches": 2,
    "drop_zero_advantage": True,
    "micro_batch_size": 16,
    "max_new_tokens": 40,
    "max_tokens": 1024,
    "max_turns": 6,
}
