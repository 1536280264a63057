"""Where a training run's numbers go: a JSONL history (the source of truth, cut back on resume),
TensorBoard scalars and a PNG of the curves, plus the one-line progress report."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: What the progress line, TensorBoard and the curves show (CleanRL's names where CleanRL has one).
TRACKED = (
    "charts/episodic_return", "charts/f1", "charts/format_ok_rate", "charts/searches_per_episode",
    "charts/response_length", "charts/truncated_rate", "charts/tokens_per_s", "losses/kl", "losses/entropy",
    "losses/clipfrac", "losses/approx_kl", "losses/policy_loss", "timers/generate_s", "timers/env_s",
    "timers/learner_s", "timers/sync_weights_s", "charts/learning_rate", "charts/trained_trajectories",
)
#: Held-out evaluation (``agents.training.heldout``), present only in the rows of the iterations that ran one.
EVALUATED = ("eval/reward", "eval/reward_se", "eval/f1", "eval/format_ok_rate", "eval/searches_per_episode")
_PANELS = (
    ("reward", "charts/episodic_return"), ("F1", "charts/f1"), ("format-valid rate", "charts/format_ok_rate"),
    ("searches / episode", "charts/searches_per_episode"), ("response length (tokens)", "charts/response_length"),
    ("KL to reference (k3)", "losses/kl"), ("entropy", "losses/entropy"), ("clip fraction", "losses/clipfrac"),
    ("tokens / s (generation)", "charts/tokens_per_s"),
)
_EVAL_PANELS = (("held-out reward (greedy eval)", "eval/reward"),
                ("held-out searches / episode (greedy eval)", "eval/searches_per_episode"))
_TIME_SPLIT = (("generation", "timers/generate_s"), ("env + retrieval", "timers/env_s"),
               ("learner", "timers/learner_s"), ("weight sync", "timers/sync_weights_s"))


class TrainingLog:
    """``DIR/metrics.jsonl`` (one line per iteration), ``DIR/tb/`` and ``DIR/curves.png``.

    Lines are flushed and fsynced as written, and :meth:`truncate` drops the iterations after a resumed
    checkpoint, so a run killed between a log line and its checkpoint never shows an iteration twice.
    """

    def __init__(self, output: str | os.PathLike) -> None:
        from tensorboardX import SummaryWriter

        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.path = self.output / "metrics.jsonl"
        self.writer = SummaryWriter(str(self.output / "tb"))

    def history(self) -> list[dict[str, float]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, iteration: int) -> None:
        """Keep only iterations <= ``iteration`` (the one a resumed run restarts after)."""
        kept = [row for row in self.history() if row["iteration"] <= iteration]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        os.replace(tmp, self.path)

    def write(self, iteration: int, result: Mapping[str, Any]) -> dict[str, float]:
        row = {"iteration": iteration, **{key: _number(result.get(key)) for key in TRACKED},
               **{key: _number(result[key]) for key in EVALUATED if key in result}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for key in (*TRACKED, *EVALUATED):
            if not math.isnan(row.get(key, math.nan)):
                self.writer.add_scalar(key, row[key], iteration)
        self.writer.flush()
        return row

    def plot(self) -> Path:
        """Redraw ``curves.png`` from the whole history."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.history()
        steps = [row["iteration"] for row in rows]
        fig, axes = plt.subplots(3, 4, figsize=(17, 10))
        for ax, (title, key) in zip(axes.flat, _PANELS, strict=False):
            ax.plot(steps, [row[key] for row in rows], marker="o")
            ax.set_title(title)
            ax.set_xlabel("iteration")
        for ax, (title, key) in zip(axes.flat[len(_PANELS) :], _EVAL_PANELS, strict=False):
            evaluated = [row for row in rows if key in row]
            ax.plot([row["iteration"] for row in evaluated], [row[key] for row in evaluated], marker="o",
                    color="tab:green")
            ax.set_title(title)
            ax.set_xlabel("iteration")
        ax = axes.flat[len(_PANELS) + len(_EVAL_PANELS)]
        bottom = [0.0] * len(rows)
        for label, key in _TIME_SPLIT:
            values = [0.0 if math.isnan(row[key]) else row[key] for row in rows]
            ax.bar(steps, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_title("time split per iteration (s)")
        ax.set_xlabel("iteration")
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = self.output / "curves.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def close(self) -> None:
        self.writer.close()


def progress_line(row: Mapping[str, float], total: int) -> str:
    """One line per iteration with what an RL user watches first (and the held-out evaluation, when it ran)."""
    evaluated = (f" | eval reward {row['eval/reward']:.3f} ± {row['eval/reward_se']:.3f} searches "
                 f"{row['eval/searches_per_episode']:.2f}" if "eval/reward" in row else "")
    return (f"iter {row['iteration']:>4}/{total} | reward {row['charts/episodic_return']:.3f} "
            f"| f1 {row['charts/f1']:.3f} | format {row['charts/format_ok_rate']:.2f} "
            f"| searches {row['charts/searches_per_episode']:.2f} | len {row['charts/response_length']:.0f} "
            f"| kl {row['losses/kl']:.2e} | entropy {row['losses/entropy']:.2f} | clip {row['losses/clipfrac']:.3f} "
            f"| {row['charts/tokens_per_s']:.0f} tok/s | gen {row['timers/generate_s']:.1f}s "
            f"env {row['timers/env_s']:.1f}s learn {row['timers/learner_s']:.1f}s{evaluated}")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
