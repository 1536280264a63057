"""Agents that act in research_env environments through the Gymnasium API.

- ``agents.generation``: generation backends (Hugging Face, vLLM, OpenAI-compatible) and the rollout loop.
- ``agents.policies``: the models trained and evaluated here (tiny and small-vocabulary Qwen2, warm starts).
- ``agents.evaluation``: evaluation runs, baselines, the oracle and the LLM judge.
- ``agents.training``: the RL algorithms, SFT, the plain-PyTorch loop and the RLlib trainer.
"""
