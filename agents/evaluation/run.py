"""The evaluation pipeline behind ``scripts/evaluate.py`` (SPEC §9): an agent × datasets run in a directory of
its own (agent, model, start time), whose per-question traces are keyed by a hash of the run's configuration,
so a rerun resumes only its own; aggregated into ``results.json``, ``results.md`` and ``results.png``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
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
from agents.generation.base import GenerationBackend
from agents.generation.rollout import RolloutConfig
from research_env.assets import DEMO_DATASETS, demo_dataset
from research_env.data import load_qa_dataset

AGENTS = ("research", "naive_generation", "naive_rag", "iter_retgen", "ircot", "oracle")
#: The per-dataset metrics, in [0, 1] except the two counts.
METRICS = ("em", "f1", "acc", "format_ok_rate", "searches_per_question", "tokens")
#: Fields of :class:`EvalConfig` that choose which questions run, or how fast, but not their outcome.
_NOT_IN_KEY = ("datasets", "limit", "batch_size")
#: Caps of the research agent when the model is the random default: it never stops on its own, so every
#: episode would otherwise run to the 8,192-token budget (minutes per question on a CPU).
RANDOM_MODEL_CAPS = {"max_new_tokens": 32, "max_turns": 2}


class RandomModelWarning(UserWarning):
    """The evaluated model is the tiny random default: the run checks the pipeline, its scores mean nothing."""


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
    template: str | None = None
    base_url: str | None = None
    api_model: str | None = None

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ValueError(f"unknown agent {self.agent!r}; choose one of {', '.join(AGENTS)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or None for all questions), got {self.limit}")
        if self.batch_size < 1 or self.top_k < 1 or self.temperature < 0:
            raise ValueError("batch_size and top_k must be >= 1 and temperature >= 0")
        if (self.base_url is None) != (self.api_model is None):
            raise ValueError("base_url and api_model go together: the server's URL and the model name it serves")
        if self.template is not None and self.agent != "research":
            raise ValueError(f"template applies to the research agent only; {self.agent!r} prompts FlashRAG-style")
        if not self.uses_random_model and self.model is not None and not Path(self.model).expanduser().is_dir():
            raise ValueError(
                f"model {self.model}: no such directory (a HF checkpoint, a training run or an RLlib "
                "checkpoint; the hub is not used)"
            )

    @property
    def uses_random_model(self) -> bool:
        return self.agent != "oracle" and self.base_url is None and self.model in (None, "tiny", "tiny-qwen2")

    def model_label(self) -> str:
        """A short name of what answers: the served model, the checkpoint directory's name, or the default."""
        if self.agent == "oracle":
            return "no-model"
        if self.api_model is not None:
            return self.api_model
        return "tiny-qwen2" if self.uses_random_model else Path(self.model).expanduser().resolve().name

    def key(self) -> str:
        """A hash of everything that decides a question's outcome (not which questions run, nor how fast)."""
        values = {k: v for k, v in asdict(self).items() if k not in _NOT_IN_KEY}
        if self.model is not None and not self.uses_random_model:
            values["model"] = model_identity(self.model)
        if self.template is not None and Path(self.template).is_file():
            values["template"] = Path(self.template).read_text(encoding="utf-8")
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def model_identity(model: str) -> str:
    """The checkpoint a model directory stands for, and when it was written: a run directory names its newest
    RLlib checkpoint, so a run trained further (or a checkpoint rewritten in place) is another model."""
    from agents.policies.export import find_module_checkpoint, is_hf_checkpoint, is_rllib_run

    path = Path(model).expanduser().resolve()
    if not is_hf_checkpoint(path) and is_rllib_run(path):
        path = find_module_checkpoint(path).resolve()
    written = max((p.stat().st_mtime_ns for p in path.iterdir() if p.is_file()), default=0)
    return f"{path}@{written}"


def resolve_dataset(name_or_path: str) -> tuple[str, Path]:
    """``(name, path)``: a shipped sample by name (musique, hotpotqa, 2wiki, bamboogle) or any dataset file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.stem, path
    try:
        return name_or_path, demo_dataset(name_or_path)
    except KeyError:
        raise FileNotFoundError(
            f"dataset {name_or_path!r} is neither a file nor a shipped sample "
            f"({', '.join(sorted(DEMO_DATASETS))}, 2wiki)"
        ) from None


def resolve_model(model: str | None) -> str | None:
    """A Hugging Face checkpoint directory for ``model``: as it is, or exported once from a training run or an
    RLlib checkpoint (``agents.policies.export``)."""
    if model is None or model in ("tiny", "tiny-qwen2"):
        return model
    from agents.policies.export import exported_policy_path, is_hf_checkpoint, is_rllib_run

    if not is_hf_checkpoint(model) and is_rllib_run(model):
        print(f"exporting the policy of {model} to a Hugging Face checkpoint ...", flush=True)
        return str(exported_policy_path(model))
    return model


def make_backend(config: EvalConfig) -> GenerationBackend:
    """The OpenAI-compatible server's client with ``base_url``, else the HF backend over the model."""
    if config.base_url is not None:
        from agents.generation.openai_backend import OpenAIBackend
        from research_env.tokenizer import load_tokenizer

        model = resolve_model(config.model)
        tokenizer = load_tokenizer(model if model not in (None, "tiny", "tiny-qwen2") else None)
        return OpenAIBackend(
            config.base_url,
            config.api_model,
            tokenizer,
            temperature=config.temperature,
            seed=config.seed,
            max_workers=config.batch_size,
        )
    from agents.generation.hf_backend import HFBackend

    return HFBackend.from_pretrained(
        resolve_model(config.model), temperature=config.temperature, seed=config.seed, batch_size=config.batch_size
    )


def make_agent(config: EvalConfig) -> Agent:
    """The named agent; every agent but the oracle generates with :func:`make_backend`."""
    if config.agent == "oracle":
        return OracleAgent()
    backend = make_backend(config)
    if config.agent == "research":
        return ReSearchAgent(backend, config.rollout)
    baseline = {"naive_generation": NaiveGeneration, "naive_rag": NaiveRAG, "iter_retgen": IterRetGen, "ircot": IRCoT}[
        config.agent
    ]
    return baseline(backend, apply_chat=config.apply_chat, top_k=config.top_k)


def read_traces(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """Records of the run ``key`` already written, by question id; a line cut short by an interrupted run, or
    one written under another configuration, is not counted."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("run_key") == key:
                records[record["question_id"]] = record
    return records


def run_directory(output: Path, config: EvalConfig) -> Path:
    """The directory of this configuration's run under ``output``: the existing one with the same key (a rerun
    resumes it), else a new ``<agent>_<model>_<YYYYmmdd-HHMMSS>``."""
    key = config.key()
    for candidate in sorted(output.glob("*/config.json")):
        try:
            if json.loads(candidate.read_text(encoding="utf-8")).get("run_key") == key:
                return candidate.parent
        except json.JSONDecodeError:
            continue
    name = f"{config.agent}_{_slug(config.model_label())}_{time.strftime('%Y%m%d-%H%M%S')}"
    run, n = output / name, 1
    while run.exists():
        n += 1
        run = output / f"{name}-{n}"
    return run


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-") or "model"


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean metrics over a dataset's records (``judge_acc`` only where every record was judged)."""
    n = len(records)
    if n == 0:
        return {"n": 0, **dict.fromkeys(METRICS, 0.0)}
    mean = lambda key: sum(float(r[key]) for r in records) / n  # noqa: E731
    result = {
        "n": n,
        "em": mean("em"),
        "f1": mean("f1"),
        "acc": mean("acc"),
        "format_ok_rate": mean("format_ok"),
        "searches_per_question": mean("num_searches"),
        "tokens": mean("generated_tokens"),
    }
    verdicts = [r.get("judge", {}).get("judgement") for r in records]
    if all(v is not None for v in verdicts):
        result["judge_acc"] = sum(map(bool, verdicts)) / n
    return result


def evaluate(config: EvalConfig, output_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, dict]:
    """Run ``config.agent`` on each dataset in the run directory of :func:`run_directory`, skipping question ids
    already in its traces, and write the results there; ``output_dir/results.*`` are copies of the latest run's.

    Returns the results of this call's datasets; the run's ``results.json`` keeps those of earlier calls too.
    """
    if config.uses_random_model:
        warnings.warn(
            "no --model given: the tiny RANDOM default model only exercises the pipeline and scores 0; "
            "pass a trained checkpoint (--model DIR) or a server (--base-url, --api-model)",
            RandomModelWarning,
            stacklevel=2,
        )
    output = Path(output_dir)
    run = run_directory(output, config)
    key = config.key()
    (run / "traces").mkdir(parents=True, exist_ok=True)
    _write_run_config(run / "config.json", config, key)
    agent: Agent | None = None
    judge = LLMJudge(config.judge_url, config.judge_model) if config.judge_url else None
    results: dict[str, dict] = {}
    for name_or_path in config.datasets:
        name, path = resolve_dataset(name_or_path)
        dataset = load_qa_dataset(path)
        wanted = dataset.ids if config.limit is None else dataset.ids[: config.limit]
        trace_path = run / "traces" / f"{name}.jsonl"
        done = read_traces(trace_path, key)
        todo = [qid for qid in wanted if qid not in done]
        if todo:
            agent = agent or make_agent(config)
            tokenizer = getattr(getattr(agent, "backend", None), "tokenizer", None)
            envs = [
                gym.make(
                    "ReSearch-v0",
                    dataset=dataset,
                    corpus=config.corpus,
                    top_k=config.top_k,
                    apply_chat=config.apply_chat,
                    template=config.template,
                    tokenizer=tokenizer,
                )
                for _ in range(1 if config.agent == "oracle" else config.batch_size)
            ]
            with trace_path.open("a", encoding="utf-8") as traces:
                for record in tqdm(
                    agent.run(envs, todo), total=len(todo), desc=f"{config.agent} on {name}", disable=not progress
                ):
                    row = {"run_key": key, **asdict(record)}
                    if judge is not None:
                        row["judge"] = judge.judge(record.question, record.golden_answers, record.answer)
                    traces.write(json.dumps(row) + "\n")
                    traces.flush()
                    done[record.question_id] = row
        results[name] = aggregate([done[qid] for qid in wanted])
    everything = _read_results(run / "results.json") | results
    write_results(everything, run, title=f"{config.agent} ({config.model_label()})")
    for file in ("results.json", "results.md", "results.png"):
        shutil.copyfile(run / file, output / file)
    print(f"results of {config.agent} ({config.model_label()}): {run}", flush=True)
    return results


def _read_results(path: Path) -> dict[str, dict]:
    """The datasets an earlier call of the same run evaluated, which a call on fewer datasets must keep."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_run_config(path: Path, config: EvalConfig, key: str) -> None:
    """``config.json``: the configuration, its key, and when each call of this run started."""
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    calls = [
        *previous.get("calls", []),
        {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "datasets": config.datasets, "limit": config.limit},
    ]
    values = {"run_key": key, "model_label": config.model_label(), **asdict(config), "calls": calls}
    path.write_text(json.dumps(values, indent=2, default=str) + "\n", encoding="utf-8")


def write_results(results: dict[str, dict], output: Path, *, title: str) -> None:
    """``results.json`` (metrics in [0, 1]), ``results.md`` (a table in percent) and ``results.png`` (bars)."""
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    header = "| dataset | n | EM | F1 | acc | format ok | searches/q | tokens/q |"
    rows = [
        f"| {name} | {m['n']} | {100 * m['em']:.2f} | {100 * m['f1']:.2f} | {100 * m['acc']:.2f} | "
        f"{100 * m['format_ok_rate']:.2f} | {m['searches_per_question']:.2f} | {m['tokens']:.1f} |"
        for name, m in results.items()
    ]
    table = "\n".join([f"# {title}", "", header, "|" + "---|" * 8, *rows, ""])
    (output / "results.md").write_text(table, encoding="utf-8")
    _plot(results, output / "results.png", title)


def _plot(results: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = results_figure(results, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def results_figure(results: dict[str, dict], title: str):  # -> matplotlib.figure.Figure
    """EM, F1 and acc per dataset in percent, each bar labelled with its value and each dataset with its n, so
    that a run scoring 0 reads as "0.0" on every bar rather than as an empty chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, metrics, width = list(results), ("em", "f1", "acc"), 0.25
    fig, ax = plt.subplots(figsize=(max(4.0, 1.8 * len(names)) + 1.0, 3.4))
    for k, metric in enumerate(metrics):
        bars = ax.bar(
            [i + (k - 1) * width for i in range(len(names))],
            [100 * results[n][metric] for n in names],
            width,
            label=metric.upper() if metric != "acc" else "acc",
        )
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=1)
    ax.set_xticks(range(len(names)), [f"{name}\nn={results[name]['n']}" for name in names])
    ax.set_ylim(0, 110)  # room for the labels of bars at 100%
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the axes: bars reach 100%
    fig.tight_layout()
    return fig
