"""Policies: the causal LMs trained and evaluated here — loading a checkpoint, the tiny and small-vocabulary
Qwen2 models built offline from a config, and the warm start that prepares a policy before RL."""
