"""Agents that act in research_env environments through the Gymnasium API: scripted oracles,
baselines, generation backends and RL algorithms."""
