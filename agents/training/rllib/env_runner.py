"""A custom RLlib EnvRunner for text envs, which RLlib's runners and connectors cannot drive: it plays
ReSearch episodes in batches through ``agents.generation.rollout.run_episodes`` with its own rollout engine (a vLLM
engine, or the HF backend over a copy of the policy), and returns token trajectories (ids, loss mask, old log-probs,
reward, group)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import ray
import torch
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env import INPUT_ENV_SPACES
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.typing import StateDict
from tqdm import tqdm

import research_env  # noqa: F401  (registers the ReSearch env ids)
from agents.generation.engines import rollout_backend_name, vllm_installed
from agents.generation.hf_backend import HFBackend
from agents.generation.rollout import run_episodes, token_env
from agents.policies.models import load_policy_tokenizer
from agents.training.algorithms import Trajectory, trajectory_from_episode
from agents.training.rllib.module import TOKEN_SPACE, TRANSCRIPT_SPACE, default_dtype


class ReSearchEnvRunner(EnvRunner, Checkpointable):
    """Samples groups of episodes: ``sample(plan)`` plays one episode per ``(group_id, question_id)``.

    Envs are ``gym.make(config.env, **config.env_config)`` under the token view and budget of
    ``agents.generation.rollout.token_env``; an ``env_config["retriever_url"]`` becomes an ``HTTPRetriever`` (so a
    config stays plain data when shipped to remote runners). One env per trajectory of the largest plan
    seen is kept, so a whole batch generates together. Sampling is seeded per call from
    ``(config.seed, seed)``, which makes a resumed run draw the same tokens as an uninterrupted one.

    The engine (``config.rollout_backend``): a ``VLLMBackend`` built once from the policy checkpoint, whose weights
    :meth:`load_policy_state` replaces in place after each update; or an ``HFBackend`` over an inference copy of
    the RL module (on this runner's GPU when it has one), the exact reference on CPU.
    """

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self.backend_name = rollout_backend_name(self.config.rollout_backend)
        self.tokenizer = load_policy_tokenizer(self.config.model_path)
        self.module: Any = None
        self.backend: Any = self._vllm_backend() if self.backend_name == "vllm" else self._hf_backend()
        self.envs: list[gym.Env] = []
        self._question_ids: list[str] | None = None
        self._http_retriever: Any = None

    def _hf_backend(self) -> HFBackend:
        self.module = self.config.get_rl_module_spec(spaces=self.get_spaces(), inference_only=True).build()
        self.module.eval()
        if torch.cuda.is_available() and self.config.num_gpus_per_env_runner > 0:
            self.module.model.to("cuda")  # Ray made this runner's GPU the only visible one
        return HFBackend(
            self.module.model,
            self.module.tokenizer,
            temperature=self.config.temperature,
            seed=self.config.seed or 0,
            batch_size=max(1, self.config.trajectories_per_batch),
            max_batch_tokens=self.config.max_batch_tokens,
        )

    def _vllm_backend(self) -> Any:
        if not vllm_installed():
            raise ImportError(
                "rollouts(backend='vllm') needs vLLM in the env runners' Python: `pip install -e .[vllm]` after the "
                "CUDA torch that vLLM needs, or `bash scripts/setup_vllm_cpu.sh` on CPU; or use backend='hf'"
            )
        from agents.generation.vllm_backend import VLLMBackend

        engine = {
            "dtype": self.config.model_dtype or default_dtype(),
            "tensor_parallel_size": self.config.vllm_tensor_parallel_size,
            **self.config.engine_kwargs,
        }
        seed = self.config.seed or 0
        return VLLMBackend(self.config.model_path, temperature=self.config.temperature, seed=seed, **engine)

    def load_policy_state(self, state: Mapping[str, Any] | ray.ObjectRef) -> None:
        """Give the rollout engine the learner's weights: a state dict, or an object-store reference to one that a
        learner put there (so the weights reach remote runners without passing through the driver)."""
        if isinstance(state, ray.ObjectRef):
            state = ray.get(state)
        if self.module is not None:
            self.module.set_state(state)
        else:
            self.backend.load_state({name: torch.as_tensor(value) for name, value in state.items()})

    def _make_env(self) -> gym.Env:
        env_config = dict(self.config.env_config)
        if url := env_config.pop("retriever_url", None):
            if self._http_retriever is None:  # one client (and connection pool) for all of this runner's envs
                from research_env.retrieval.http import HTTPRetriever

                self._http_retriever = HTTPRetriever(url)
            env_config["retriever"] = self._http_retriever
        return token_env(gym.make(self.config.env, **env_config), self.tokenizer, self.config.rollout_config)

    def question_ids(self) -> list[str]:
        """The ids of the env's dataset, in file order."""
        if self._question_ids is None:
            if not self.envs:
                self.envs.append(self._make_env())
            self._question_ids = self.envs[0].unwrapped.dataset.ids
        return self._question_ids

    def sample(self, plan: Sequence[tuple[int, str]] = (), seed: int = 0, **kwargs: Any) -> dict[str, Any]:
        """Play the plan; returns ``trajectories`` (in the plan's order) and where the time went."""
        if len({qid for _, qid in plan}) != len({gid for gid, _ in plan}):
            raise ValueError("each question of a plan must belong to exactly one group")
        group_of = dict((qid, gid) for gid, qid in plan)
        while len(self.envs) < len(plan):
            self.envs.append(self._make_env())
        base_seed = self.config.seed or 0
        self.backend.reseed((base_seed * 1_000_003 + seed) * 1_009 + (self.worker_index or 0))
        started = time.perf_counter()
        episodes = list(
            tqdm(
                run_episodes(
                    self.envs[: len(plan)], self.backend, [qid for _, qid in plan], self.config.rollout_config
                ),
                total=len(plan),
                desc="episodes",
                unit="ep",
                leave=False,
                disable=bool(self.worker_index),
            )
        )  # a bar in the driver's runner only
        wall_s = time.perf_counter() - started
        order = {qid: i for i, (_, qid) in enumerate(plan)}
        episodes.sort(key=lambda e: order[e.question_id])
        trajectories: list[Trajectory] = [trajectory_from_episode(e, group_of[e.question_id]) for e in episodes]
        return {
            "trajectories": trajectories,
            "wall_s": wall_s,
            "generate_s": sum(e.generate_s for e in episodes),
            "env_s": sum(e.env_s for e in episodes),
            "generated_tokens": sum(e.generated_tokens for e in episodes),
        }

    def get_spaces(self) -> dict[str, tuple[gym.Space, gym.Space]]:
        spaces = (TRANSCRIPT_SPACE, TOKEN_SPACE)
        return {DEFAULT_MODULE_ID: spaces, INPUT_ENV_SPACES: spaces}

    def assert_healthy(self) -> None:
        assert self.backend is not None

    def get_metrics(self) -> dict[str, Any]:
        return {}

    def stop(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
        if self._http_retriever is not None:
            self._http_retriever.close()
            self._http_retriever = None

    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> StateDict:
        # Nothing of ours outlives an iteration: the weights are the learner's, the sampling seed is derived.
        return {}

    def set_state(self, state: StateDict) -> None:
        if COMPONENT_RL_MODULE in state:
            self.load_policy_state(state[COMPONENT_RL_MODULE][DEFAULT_MODULE_ID])

    def get_ctor_args_and_kwargs(self) -> tuple[tuple, dict[str, Any]]:
        return (), {"config": self.config}
