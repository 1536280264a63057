"""What both trainers report and where it goes: one metric vocabulary (CleanRL's names where CleanRL has one),
a JSONL history (the source of truth, cut back on resume), TensorBoard scalars, Weights & Biases (optional) and
a PNG of the curves, plus the one-line progress report."""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from agents.training.algorithms import Trajectory

#: Mean |log p_rollout - log p_learner| over the sampled policy tokens, before an iteration's first update: the check
#: that the rollout engine samples from the policy being trained (~1e-7 in float32 when the weights are in sync, as
#: large as the last update's change when they are not). The RLlib trainer logs it; the plain loop samples from the
#: model it trains.
LOGPROB_DIFF = "rollout/logprob_diff"

#: What the progress line, TensorBoard and the curves show (CleanRL's names where CleanRL has one).
TRACKED = (
    "charts/episodic_return",
    "charts/f1",
    "charts/format_ok_rate",
    "charts/searches_per_episode",
    "charts/response_length",
    "charts/truncated_rate",
    "charts/tokens_per_s",
    "losses/kl",
    "losses/entropy",
    "losses/clipfrac",
    "losses/approx_kl",
    "losses/policy_loss",
    "timers/generate_s",
    "timers/env_s",
    "timers/learner_s",
    "timers/sync_weights_s",
    "charts/learning_rate",
    "charts/trained_trajectories",
    LOGPROB_DIFF,
)
#: Held-out evaluation (``agents.training.heldout``), present only in the rows of the iterations that ran one.
EVALUATED = ("eval/reward", "eval/reward_se", "eval/f1", "eval/format_ok_rate", "eval/searches_per_episode")
_PANELS = (
    ("reward", "charts/episodic_return"),
    ("F1", "charts/f1"),
    ("format-valid rate", "charts/format_ok_rate"),
    ("searches / episode", "charts/searches_per_episode"),
    ("response length (tokens)", "charts/response_length"),
    ("KL to reference (k3)", "losses/kl"),
    ("entropy", "losses/entropy"),
    ("clip fraction", "losses/clipfrac"),
    ("tokens / s (generation)", "charts/tokens_per_s"),
)
_EVAL_PANELS = (
    ("held-out reward (greedy eval)", "eval/reward"),
    ("held-out searches / episode (greedy eval)", "eval/searches_per_episode"),
)
_TIME_SPLIT = (
    ("generation", "timers/generate_s"),
    ("env + retrieval", "timers/env_s"),
    ("learner", "timers/learner_s"),
    ("weight sync", "timers/sync_weights_s"),
)


def rollout_charts(
    trajectories: list[Trajectory], advantages: torch.Tensor, *, trained: int, generated_tokens: int, sample_s: float
) -> dict[str, float]:
    """The ``charts/*`` of one iteration's rollouts, the same for every trainer: means over the trajectories,
    how many were trained on, and the generation throughput."""
    stats = {key: sum(t.stats[key] for t in trajectories) / len(trajectories) for key in trajectories[0].stats}
    return {
        "charts/episodic_return": stats["reward"],
        "charts/f1": stats["f1"],
        "charts/format_ok_rate": stats["format_ok"],
        "charts/searches_per_episode": stats["searches"],
        "charts/response_length": stats["response_tokens"],
        "charts/truncated_rate": stats["truncated"],
        "charts/advantage_abs_mean": float(advantages.abs().mean()),
        "charts/trained_trajectories": float(trained),
        "charts/tokens_per_s": generated_tokens / max(sample_s, 1e-9),
    }


class TrainingLog:
    """``DIR/metrics.jsonl`` (one line per iteration), ``DIR/tb/``, ``DIR/curves.png`` and, with
    ``wandb_project``, a Weights & Biases run (files in ``DIR/wandb/``).

    Lines are flushed and fsynced as written, and :meth:`truncate` drops the iterations after a resumed
    checkpoint, so a run killed between a log line and its checkpoint never shows an iteration twice. The W&B
    run id is kept in ``DIR/wandb_run_id``, so a resumed training continues the same W&B run.
    ``wandb_mode="offline"`` (or ``WANDB_MODE=offline``) needs no network or account: ``wandb sync DIR/wandb``
    uploads later.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        *,
        wandb_project: str | None = None,
        wandb_mode: str | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        from tensorboardX import SummaryWriter

        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.path = self.output / "metrics.jsonl"
        self.writer = SummaryWriter(str(self.output / "tb"))
        self.wandb_run = None
        if wandb_project is not None:
            self.wandb_run = _start_wandb(self.output, wandb_project, wandb_mode, dict(run_config or {}))

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
        row = {
            "iteration": iteration,
            **{key: _number(result.get(key)) for key in TRACKED},
            **{key: _number(result[key]) for key in EVALUATED if key in result},
        }
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for key in (*TRACKED, *EVALUATED):
            if not math.isnan(row.get(key, math.nan)):
                self.writer.add_scalar(key, row[key], iteration)
        self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(
                {k: v for k, v in row.items() if k in (*TRACKED, *EVALUATED) and not math.isnan(v)},
                step=iteration,
                commit=True,
            )  # a whole iteration: do not hold it back
        return row

    def plot(self) -> Path:
        """Redraw ``curves.png`` from the whole history."""
        import matplotlib.pyplot as plt

        fig = curves_figure(self.history())
        path = self.output / "curves.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def close(self) -> None:
        self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _start_wandb(output: Path, project: str, mode: str | None, config: dict[str, Any]) -> Any:
    """A W&B run for ``output``, the same one again on resume (its id is kept in ``output/wandb_run_id``)."""
    try:
        import wandb
    except ImportError:
        raise ImportError("--wandb needs the wandb package: pip install wandb (it is in the [train] extra)") from None
    id_file = output / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    return wandb.init(
        project=project,
        id=run_id,
        resume="allow",
        name=output.name,
        dir=str(output),
        mode=mode or os.environ.get("WANDB_MODE") or "online",
        config=config,
    )


def training_log(output: str | os.PathLike, args: Any) -> TrainingLog:
    """The trainers' log for their parsed command line (``--wandb PROJECT``, ``--wandb-mode``)."""
    return TrainingLog(
        output,
        wandb_project=getattr(args, "wandb", None),
        wandb_mode=getattr(args, "wandb_mode", None),
        run_config=_config_values(args),
    )


def curves_figure(rows: list[dict[str, float]]):  # -> matplotlib.figure.Figure
    """The training curves: one panel per tracked chart and the time split, over whole iterations.

    Iteration axes get integer ticks only, and every tick carries its whole value: matplotlib's default moves a
    common offset or power of ten (``1e-5``) into a label at the top of the axis, over the panel's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [row["iteration"] for row in rows]
    fig, axes = plt.subplots(3, 4, figsize=(17, 10))
    for ax, (title, key) in zip(axes.flat, _PANELS, strict=False):
        ax.plot(steps, [row.get(key, math.nan) for row in rows], marker="o")
        ax.set_title(title)
    for ax, (title, key) in zip(axes.flat[len(_PANELS) :], _EVAL_PANELS, strict=False):
        evaluated = [row for row in rows if key in row]  # only the iterations that ran a held-out evaluation
        ax.plot([row["iteration"] for row in evaluated], [row[key] for row in evaluated], marker="o", color="tab:green")
        ax.set_title(title)
        if not evaluated:
            ax.text(
                0.5,
                0.5,
                "no held-out evaluation\n(--eval-every 0)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
    ax = axes.flat[len(_PANELS) + len(_EVAL_PANELS)]
    bottom = [0.0] * len(rows)
    for label, key in _TIME_SPLIT:
        values = [0.0 if math.isnan(row.get(key, math.nan)) else row[key] for row in rows]
        ax.bar(steps, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title("time split per iteration (s)")
    ax.legend(fontsize="small")
    for ax in axes.flat:
        ax.set_xlabel("iteration")
        if steps:  # one iteration range on every panel, those without points (no evaluation ran) included
            ax.set_xlim(min(steps) - 0.5, max(steps) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # each tick in full, never a shared offset
    fig.tight_layout()
    return fig


def write_run_config(output: str | os.PathLike, args: Any) -> Path:
    """``DIR/config.json``: the run's resolved flags and settings, readable without the code that wrote them
    (argparse's namespace with the settings dataclass expanded)."""
    values = _config_values(args)
    path = Path(output) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def _config_values(args: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    values = {key: asdict(value) if is_dataclass(value) else value for key, value in vars(args).items()}
    return json.loads(json.dumps(values, default=str))  # paths and the like as text, as config.json has them


def progress_line(row: Mapping[str, float], total: int) -> str:
    """One line per iteration with what an RL user watches first (and the held-out evaluation, when it ran)."""
    evaluated = (
        f" | eval reward {row['eval/reward']:.3f} ± {row['eval/reward_se']:.3f} searches "
        f"{row['eval/searches_per_episode']:.2f}"
        if "eval/reward" in row
        else ""
    )
    return (
        f"iter {row['iteration']:>4}/{total} | reward {row['charts/episodic_return']:.3f} "
        f"| f1 {row['charts/f1']:.3f} | format {row['charts/format_ok_rate']:.2f} "
        f"| searches {row['charts/searches_per_episode']:.2f} | len {row['charts/response_length']:.0f} "
        f"| kl {row['losses/kl']:.2e} | entropy {row['losses/entropy']:.2f} | clip {row['losses/clipfrac']:.3f} "
        f"| {row['charts/tokens_per_s']:.0f} tok/s | gen {row['timers/generate_s']:.1f}s "
        f"env {row['timers/env_s']:.1f}s learn {row['timers/learner_s']:.1f}s{evaluated}"
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
