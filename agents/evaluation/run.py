"""The evaluation pipeline behind ``scripts/evaluate.py`` (SPEC §9): an agent × datasets run that appends
per-question traces (JSONL, resumable), then aggregates them into ``results.json``, ``results.md`` and
``results.png``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from tqdm import tqdm

import research_env  # noqa: F401  (registers the env ids)
from agents.evaluation.baselines import IRCoT, IterRetGen, NaiveGeneration, NaiveRAG
from agents.evaluation.judge import LLMJudge
from agents.evaluation.oracle import OracleAgent
from agents.evaluation.records import Agent
from agents.evaluation.research_agent import ReSearchAgent
from agents.generation.rollout import RolloutConfig
from research_env.assets import DEMO_DATASETS, demo_dataset
from research_env.data import load_qa_dataset

AGENTS = ("research", "naive_generation", "naive_rag", "iter_retgen", "ircot", "oracle")
#: The per-dataset metrics, in [0, 1] except the two counts.
METRICS = ("em", "f1", "acc", "format_ok_rate", "searches_per_question", "tokens")


@dataclass
class EvalConfig:
    """Everything a run depends on; written to ``config.json`` next to the results."""

    datasets: list[str]
    agent: str = "naive_rag"
    model: str | None = None
    limit: int | None = None
    corpus: str | None = None
    apply_chat: bool = False
    batch_size: int = 16
    temperature: float = 0.0
    seed: int = 0
    top_k: int = 5
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    judge_url: str | None = None
    judge_model: str = "gpt-4o-mini"


def resolve_dataset(name_or_path: str) -> tuple[str, Path]:
    """``(name, path)``: a shipped sample by name (musique, hotpotqa, 2wiki, bamboogle) or any dataset file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.stem, path
    try:
        return name_or_path, demo_dataset(name_or_path)
    except KeyError:
        raise FileNotFoundError(f"dataset {name_or_path!r} is neither a file nor a shipped sample "
                                f"({', '.join(sorted(DEMO_DATASETS))}, 2wiki)") from None


def make_agent(config: EvalConfig) -> Agent:
    """The named agent; every agent but the oracle generates with the HF backend over ``config.model``."""
    if config.agent not in AGENTS:
        raise ValueError(f"unknown agent {config.agent!r}; choose one of {', '.join(AGENTS)}")
    if config.agent == "oracle":
        return OracleAgent()
    from agents.generation.hf_backend import HFBackend

    backend = HFBackend.from_pretrained(config.model, temperature=config.temperature, seed=config.seed,
                                        batch_size=config.batch_size)
    if config.agent == "research":
        return ReSearchAgent(backend, config.rollout)
    baseline = {"naive_generation": NaiveGeneration, "naive_rag": NaiveRAG, "iter_retgen": IterRetGen,
                "ircot": IRCoT}[config.agent]
    return baseline(backend, apply_chat=config.apply_chat, top_k=config.top_k)


def read_traces(path: Path) -> dict[str, dict[str, Any]]:
    """Records already written, by question id; a line cut short by an interrupted run is dropped."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["question_id"]] = record
    return records


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean metrics over a dataset's records (``judge_acc`` only where every record was judged)."""
    n = len(records)
    if n == 0:
        return {"n": 0, **dict.fromkeys(METRICS, 0.0)}
    mean = lambda key: sum(float(r[key]) for r in records) / n  # noqa: E731
    result = {"n": n, "em": mean("em"), "f1": mean("f1"), "acc": mean("acc"), "format_ok_rate": mean("format_ok"),
              "searches_per_question": mean("num_searches"), "tokens": mean("generated_tokens")}
    verdicts = [r.get("judge", {}).get("judgement") for r in records]
    if all(v is not None for v in verdicts):
        result["judge_acc"] = sum(map(bool, verdicts)) / n
    return result


def evaluate(config: EvalConfig, output_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, dict]:
    """Run ``config.agent`` on each dataset, skipping question ids already in its traces, and write the results."""
    output = Path(output_dir)
    (output / "traces").mkdir(parents=True, exist_ok=True)
    config_dict = asdict(config)
    (output / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n", encoding="utf-8")
    agent: Agent | None = None
    judge = LLMJudge(config.judge_url, config.judge_model) if config.judge_url else None
    results: dict[str, dict] = {}
    for name_or_path in config.datasets:
        name, path = resolve_dataset(name_or_path)
        dataset = load_qa_dataset(path)
        wanted = dataset.ids if config.limit is None else dataset.ids[: max(config.limit, 0)]
        trace_path = output / "traces" / f"{name}.jsonl"
        done = read_traces(trace_path)
        todo = [qid for qid in wanted if qid not in done]
        if todo:
            agent = agent or make_agent(config)
            envs = [gym.make("ReSearch-v0", dataset=dataset, corpus=config.corpus, top_k=config.top_k,
                             apply_chat=config.apply_chat, tokenizer=getattr(getattr(agent, "backend", None),
                                                                             "tokenizer", None))
                    for _ in range(1 if config.agent == "oracle" else config.batch_size)]
            with trace_path.open("a", encoding="utf-8") as traces:
                for record in tqdm(agent.run(envs, todo), total=len(todo), desc=f"{config.agent} on {name}",
                                   disable=not progress):
                    row = asdict(record)
                    if judge is not None:
                        row["judge"] = judge.judge(record.question, record.golden_answers, record.answer)
                    traces.write(json.dumps(row) + "\n")
                    traces.flush()
                    done[record.question_id] = row
        results[name] = aggregate([done[qid] for qid in wanted])
    model = "no model" if config.agent == "oracle" else config.model or "tiny-qwen2"
    write_results(results, output, title=f"{config.agent} ({model})")
    return results


def write_results(results: dict[str, dict], output: Path, *, title: str) -> None:
    """``results.json`` (metrics in [0, 1]), ``results.md`` (a table in percent) and ``results.png`` (bars)."""
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    header = "| dataset | n | EM | F1 | acc | format ok | searches/q | tokens/q |"
    rows = [f"| {name} | {m['n']} | {100 * m['em']:.2f} | {100 * m['f1']:.2f} | {100 * m['acc']:.2f} | "
            f"{100 * m['format_ok_rate']:.2f} | {m['searches_per_question']:.2f} | {m['tokens']:.1f} |"
            for name, m in results.items()]
    table = "\n".join([f"# {title}", "", header, "|" + "---|" * 8, *rows, ""])
    (output / "results.md").write_text(table, encoding="utf-8")
    _plot(results, output / "results.png", title)


def _plot(results: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, metrics, width = list(results), ("em", "f1", "acc"), 0.25
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(names)) + 1.0, 3.2))
    for k, metric in enumerate(metrics):
        ax.bar([i + (k - 1) * width for i in range(len(names))], [100 * results[n][metric] for n in names], width,
               label=metric.upper() if metric != "acc" else "acc")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the axes: bars reach 100%
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
