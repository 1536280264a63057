"""Rollout throughput of the trainer's path, HF vs vLLM side by side in one run: generated tokens/s of
``agents.generation.rollout.run_episodes`` over ``token_env`` envs (what each RLlib env runner does per ``sample``),
at 16 and 64 parallel episodes, with retrieval in every turn, and where a turn's time goes (generation vs env steps).

    python benchmarks/rollout.py                           # HF and vLLM at 16 and 64 parallel episodes
    python benchmarks/rollout.py --quick --json out.json   # 16 parallel only, < 5 min with the vLLM engine start

The model is the tiny random one with its output layer scripted (tests/test_rollout_retrieval.py's
``searching_model``) so that every chunk writes ``<search>"Edward"</search>``: each turn ends in a real BM25 search
of the demo corpus, as a trained ReSearch policy's turns do. Both backends run float32 and greedy, over the same
envs, one engine each, reused for every row; rows alternate between backends so that load changes hit both alike.
vLLM rows read "not installed (bash scripts/setup_vllm_cpu.sh)" when vLLM cannot be imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests' model builder

import research_env  # noqa: E402, F401  (registers the env ids)
from agents.generation.base import GenerationBackend  # noqa: E402
from agents.generation.engines import vllm_installed  # noqa: E402
from agents.generation.hf_backend import HFBackend  # noqa: E402
from agents.generation.rollout import RolloutConfig, run_episodes, token_env  # noqa: E402
from agents.policies.models import load_policy_tokenizer  # noqa: E402
from tests.test_rollout_retrieval import searching_model  # noqa: E402

NOT_INSTALLED = "not installed (bash scripts/setup_vllm_cpu.sh)"
HEADER = (
    "backend",
    "parallel episodes",
    "episodes",
    "turns",
    "searches",
    "generated tokens",
    "wall s",
    "tokens/s",
    "generation ms/turn",
    "env+retrieval ms/turn",
    "env+retrieval share of a turn",
)


@dataclass
class Row:
    """One backend at one parallelism. Per-turn times are per episode turn: an episode's share of the batched
    generation call, and of the batched env step (its search included) plus its reset."""

    backend: str
    parallel: int
    episodes: int
    turns: int
    searches: int
    generated_tokens: int
    wall_s: float
    generate_s: float
    env_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s

    @property
    def generate_ms_per_turn(self) -> float:
        return 1000 * self.generate_s / self.turns

    @property
    def env_ms_per_turn(self) -> float:
        return 1000 * self.env_s / self.turns

    @property
    def env_share(self) -> float:
        return self.env_s / (self.env_s + self.generate_s)

    def record(self) -> dict[str, Any]:
        derived = ("tokens_per_s", "generate_ms_per_turn", "env_ms_per_turn", "env_share")
        measured = {name: round(v, 4) if isinstance(v, float) else v for name, v in asdict(self).items()}
        return {**measured, **{name: round(getattr(self, name), 4) for name in derived}}

    def cells(self) -> tuple[str, ...]:
        return (
            self.backend,
            str(self.parallel),
            str(self.episodes),
            str(self.turns),
            str(self.searches),
            str(self.generated_tokens),
            f"{self.wall_s:.1f}",
            f"{self.tokens_per_s:.0f}",
            f"{self.generate_ms_per_turn:.1f}",
            f"{self.env_ms_per_turn:.1f}",
            f"{self.env_share:.1%}",
        )


def play(
    backend: GenerationBackend, envs: list[gym.Env], question_ids: list[str], config: RolloutConfig, name: str
) -> Row:
    """Play ``question_ids`` on ``envs`` as one env runner's ``sample`` does."""
    started = time.perf_counter()
    episodes = list(run_episodes(envs, backend, question_ids, config))
    wall_s = time.perf_counter() - started
    return Row(
        backend=name,
        parallel=len(envs),
        episodes=len(episodes),
        turns=sum(len(e.chunks) for e in episodes),
        searches=sum(e.info.get("num_searches", 0) for e in episodes),
        generated_tokens=sum(e.generated_tokens for e in episodes),
        wall_s=wall_s,
        generate_s=sum(e.generate_s for e in episodes),
        env_s=sum(e.env_s for e in episodes),
    )


def vllm_backend(model: Path) -> tuple[GenerationBackend | None, float | None]:
    """The vLLM engine and its start-up seconds; None, None when vLLM is not importable."""
    if not vllm_installed():
        return None, None
    from agents.generation.vllm_backend import VLLMBackend

    started = time.perf_counter()
    backend = VLLMBackend(model, dtype="float32", enforce_eager=True)
    return backend, time.perf_counter() - started


def markdown(rows: list[Row | tuple[str, int]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = row.cells() if isinstance(row, Row) else (row[0], str(row[1]), NOT_INSTALLED, *["–"] * 8)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[Row | tuple[str, int]]) -> dict[str, float]:
    rate = {(r.backend, r.parallel): r.tokens_per_s for r in rows if isinstance(r, Row)}
    return {
        f"vLLM/HF tokens/s @{n}": round(rate[("vllm", n)] / rate[("hf", n)], 3)
        for backend, n in rate
        if backend == "hf" and ("vllm", n) in rate
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, nargs="+", default=[16, 64], help="parallel episodes per row")
    parser.add_argument("--episodes-per-slot", type=int, default=4, help="episodes each parallel slot plays per row")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="16 parallel episodes, 2 episodes per slot")
    parser.add_argument("--json", type=Path, help="also write the rows, ratios and load average here")
    args = parser.parse_args()
    if args.quick:
        args.parallel, args.episodes_per_slot = [16], 2
    config = RolloutConfig(max_new_tokens=args.max_new_tokens, max_turns=args.max_turns)
    with tempfile.TemporaryDirectory() as work:
        model = searching_model(Path(work) / "searching-tiny-qwen2")
        tokenizer = load_policy_tokenizer(model)
        # One set of envs for both backends, as a runner keeps its envs across samples; they share one retriever.
        envs = [token_env(gym.make("ReSearch-MuSiQue-v0"), tokenizer, config) for _ in range(max(args.parallel))]
        ids = envs[0].unwrapped.dataset.ids
        backends: dict[str, GenerationBackend | None] = {
            "hf": HFBackend.from_pretrained(model, device="cpu", batch_size=max(args.parallel))
        }
        backends["vllm"], vllm_start_s = vllm_backend(model)
        for backend in filter(None, backends.values()):  # warm-up: first calls, the retriever's JVM, the caches
            list(run_episodes(envs[:2], backend, ids[:2], config))
        rows: list[Row | tuple[str, int]] = []
        for parallel in args.parallel:
            # Questions repeat when the demo set is smaller than a row needs; each episode still starts afresh.
            question_ids = list(islice(cycle(ids), parallel * args.episodes_per_slot))
            for name, backend in backends.items():
                if backend is None:
                    rows.append((name, parallel))
                else:
                    rows.append(play(backend, envs[:parallel], question_ids, config, name))
        for env in envs:
            env.close()
    load = [round(x, 2) for x in os.getloadavg()]
    start = NOT_INSTALLED if vllm_start_s is None else f"{vllm_start_s:.0f} s"
    print(
        f"searching tiny-qwen2 (float32, greedy), max_new_tokens={args.max_new_tokens}, max_turns={args.max_turns}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load}, "
        f"vLLM engine start {start}\n"
    )
    print(markdown(rows))
    result = ratios(rows)
    for key, value in result.items():
        print(f"{key}: {value:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "rollout",
                    "load_average": load,
                    "ratios": result,
                    "rows": [
                        r.record() if isinstance(r, Row) else {"backend": r[0], "parallel": r[1], "note": NOT_INSTALLED}
                        for r in rows
                    ],
                    "vllm_engine_start_s": None if vllm_start_s is None else round(vllm_start_s, 1),
                },
                indent=2,
            ),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
