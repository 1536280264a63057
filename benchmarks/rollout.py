"""Rollout throughput with the tiny default model: generated tokens/s of the HF backend for 1, 16 and 64
parallel episodes, and where a rollout turn's wall time goes (generation vs env steps, retrieval included).
Printed as a markdown table.

    python benchmarks/rollout.py            # ~1 min on 2 cores
    python benchmarks/rollout.py --vllm     # + vLLM generation rows (needs .venv-vllm: scripts/setup_vllm_cpu.sh)

Each row plays ``--episodes-per-slot`` episodes of MuSiQue demo questions per parallel slot, ``--max-turns``
chunks of ``--max-new-tokens`` each. The tiny model is random: it never closes a ``</search>``, so every chunk
runs to its cap and env steps only append tokens; with a trained model the env share includes retrieval.
vLLM rows time the same first-turn contexts through ``agents.generation.vllm_check`` in the vLLM venv (generation only,
engine start-up excluded), next to the HF backend's generation-only rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

import gymnasium as gym
import torch

import research_env  # noqa: F401  (registers the env ids)
from agents.generation.hf_backend import HFBackend
from agents.generation.rollout import RolloutConfig, run_episodes, token_env
from agents.policies.models import tiny_qwen2_path
from research_env.assets import demo_dataset
from research_env.data import load_qa_dataset

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("RESEARCH_GYM_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
HEADER = (
    "backend",
    "parallel",
    "episodes",
    "turns",
    "tokens",
    "wall s",
    "tokens/s",
    "gen tokens/s",
    "gen ms/turn",
    "env ms/turn",
    "env share",
)


def hf_row(backend: HFBackend, question_ids: list[str], parallel: int, config: RolloutConfig) -> tuple[str, ...]:
    """Play ``question_ids`` on ``parallel`` envs; per-turn times are per episode (a batched call's share)."""
    envs = [
        token_env(gym.make("ReSearch-MuSiQue-v0", tokenizer=backend.tokenizer), backend.tokenizer, config)
        for _ in range(parallel)
    ]
    started = time.perf_counter()
    episodes = list(run_episodes(envs, backend, question_ids, config))
    wall = time.perf_counter() - started
    tokens = sum(e.generated_tokens for e in episodes)
    turns = sum(len(e.chunks) for e in episodes)
    generate_s, env_s = sum(e.generate_s for e in episodes), sum(e.env_s for e in episodes)
    return (
        "hf",
        str(parallel),
        str(len(episodes)),
        str(turns),
        str(tokens),
        f"{wall:.1f}",
        f"{tokens / wall:.0f}",
        f"{tokens / generate_s:.0f}",
        f"{1000 * generate_s / turns:.1f}",
        f"{1000 * env_s / turns:.2f}",
        f"{env_s / (env_s + generate_s):.1%}",
    )


def first_turn_contexts(backend: HFBackend, question_ids: list[str], config: RolloutConfig) -> list[list[int]]:
    env = token_env(gym.make("ReSearch-MuSiQue-v0", tokenizer=backend.tokenizer), backend.tokenizer, config)
    return [list(env.reset(options={"question_id": qid})[0]["input_ids"]) for qid in question_ids]


def vllm_rows(contexts: list[list[int]], parallels: list[int], max_new_tokens: int) -> list[tuple[str, ...]]:
    """One ``generate`` call per row in the vLLM venv, after a warm-up call; no stop, so every chunk is full."""
    calls = [{"contexts": contexts[:1], "max_new_tokens": max_new_tokens}]
    calls += [{"contexts": contexts[:n], "max_new_tokens": max_new_tokens} for n in parallels]
    spec = {"model": str(tiny_qwen2_path()), "llm_kwargs": {"dtype": "float32", "enforce_eager": True}, "calls": calls}
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "calls.json").write_text(json.dumps(spec), encoding="utf-8")
        subprocess.run(
            [str(VLLM_PYTHON), "-m", "agents.generation.vllm_check", f"{work}/calls.json", f"{work}/results.json"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        results = json.loads((Path(work) / "results.json").read_text(encoding="utf-8"))
    rows = []
    for n, call in zip(parallels, results["calls"][1:], strict=True):
        tokens = sum(len(chunk["token_ids"]) for chunk in call["chunks"])
        rate = f"{tokens / call['seconds']:.0f}"
        rows.append(
            (
                "vllm (1st turn)",
                str(n),
                str(n),
                str(n),
                str(tokens),
                f"{call['seconds']:.1f}",
                rate,
                rate,
                f"{1000 * call['seconds'] / n:.1f}",
                "-",
                "-",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--episodes-per-slot", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--vllm", action="store_true", help="add vLLM rows (runs the vLLM venv's interpreter)")
    args = parser.parse_args()
    if args.vllm and not VLLM_PYTHON.is_file():
        parser.error(
            f"no vLLM interpreter at {VLLM_PYTHON}: run scripts/setup_vllm_cpu.sh or set RESEARCH_GYM_VLLM_PYTHON"
        )
    config = RolloutConfig(max_new_tokens=args.max_new_tokens, max_turns=args.max_turns)
    backend = HFBackend.from_pretrained(device="cpu", batch_size=max(args.parallel))
    dataset = load_qa_dataset(demo_dataset("musique"))
    ids = dataset.ids
    rows = []
    for parallel in args.parallel:
        # Questions repeat when the demo set is smaller than a row needs; each episode still starts afresh.
        rows.append(hf_row(backend, list(islice(cycle(ids), parallel * args.episodes_per_slot)), parallel, config))
    if args.vllm:
        contexts = first_turn_contexts(backend, list(islice(cycle(ids), max(args.parallel))), config)
        rows += vllm_rows(contexts, args.parallel, args.max_new_tokens)
    print(
        f"tiny-qwen2, max_new_tokens={args.max_new_tokens}, max_turns={args.max_turns}, "
        f"{os.cpu_count()} CPUs, torch threads: {torch.get_num_threads()}\n"
    )
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
