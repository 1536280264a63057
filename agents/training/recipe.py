"""The synthetic world under which GRPO visibly teaches a small policy to search on CPU: the trainer's
zero-argument run and ``benchmarks/learning.py --task synthetic`` both play it."""

from __future__ import annotations

#: Keywords of ``ReSearch-Synthetic-v0``. 4,000 one-hop questions per split, so that SFT sees each training
#: question rarely and must learn to copy names from passages instead of memorising answers (with 500
#: questions x 20 epochs the 0.6M-parameter policy memorised them and never answered a held-out question);
#: a one-line prompt, because the paper's instructions mean nothing to a policy trained from scratch and were
#: four fifths of every sequence's tokens.
SYNTHETIC_WORLD: dict = {"num_questions": 4000, "num_entities": 16000, "template": "User: {prompt}\nAssistant:"}
