"""Training: the RL algorithms (advantage estimators and loss aggregations, shared by both trainers), SFT, the
plain-PyTorch GRPO loop, the Ray RLlib trainer (``agents.training.rllib``) and the run reporting they share."""
