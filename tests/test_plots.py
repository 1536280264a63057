"""The data behind the PNGs a user looks at first: curves.png over whole iterations with every tick's value in
full (no offset label drawn over a title), and results.png with its n and a value on every bar, also at 0."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from agents.evaluation.run import METRICS, results_figure
from agents.training.reporting import TRACKED, TrainingLog, curves_figure


def _history(iterations: int) -> list[dict[str, float]]:
    return [
        {
            "iteration": i,
            **{key: 0.5 for key in TRACKED},
            "losses/kl": 1e-5 + 1e-9 * i,
            "losses/entropy": 11.9 + 1e-4 * i,
            "timers/sync_weights_s": math.nan,
        }
        for i in range(1, iterations + 1)
    ]


def test_curves_have_integer_iteration_ticks_and_no_offset_label():
    fig = curves_figure(_history(3))
    fig.canvas.draw()
    try:
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)
            assert ax.yaxis.get_offset_text().get_text() == "", ax.get_title()
            assert ax.get_xlabel() == "iteration"
        kl = next(ax for ax in fig.axes if ax.get_title().startswith("KL"))
        assert list(kl.lines[0].get_ydata()) == [row["losses/kl"] for row in _history(3)]
    finally:
        plt.close(fig)


def test_training_log_writes_the_curves_png(tmp_path):
    log = TrainingLog(tmp_path)
    for row in _history(2):
        log.write(row["iteration"], row)
    assert log.plot().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.close()


def test_results_chart_shows_n_and_a_value_on_every_bar_even_at_zero():
    zeros = {name: {"n": n, **dict.fromkeys(METRICS, 0.0)} for name, n in (("musique", 3), ("bamboogle", 125))}
    fig = results_figure(zeros, "research (tiny-qwen2)")
    fig.canvas.draw()
    try:
        [ax] = [a for a in fig.axes if a.get_title()]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["musique\nn=3", "bamboogle\nn=125"]
        labels = [t.get_text() for t in ax.texts]
        assert labels == ["0.0"] * 6  # 3 metrics x 2 datasets
        assert [p.get_height() for p in ax.patches] == [0.0] * 6
    finally:
        plt.close(fig)
    mixed = {"musique": {"n": 2, **dict.fromkeys(METRICS, 0.0), "em": 0.5, "f1": 0.625, "acc": 1.0}}
    fig = results_figure(mixed, "oracle")
    try:
        assert sorted(t.get_text() for t in fig.axes[0].texts) == ["100.0", "50.0", "62.5"]
    finally:
        plt.close(fig)


@pytest.mark.slow  # importing the benchmark imports Ray RLlib
def test_learning_chart_says_which_seed_each_bar_pair_is():
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    import learning

    runs = json.loads((root / "benchmarks" / "results" / "learning" / "learning.json").read_text())["runs"]
    fig = learning.learning_figure(runs)
    try:
        bars = fig.axes[1]
        labels = [t.get_text() for t in bars.texts]
        assert sorted(labels) == sorted(f"s{run['seed']}" for run in runs for _ in range(4))  # one per pair
        assert [t.get_text() for t in bars.get_legend().get_texts()] == ["before GRPO", "after GRPO"]
        assert len(bars.patches) == 2 * 4 * len(runs)
    finally:
        plt.close(fig)
