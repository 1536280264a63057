"""Weights & Biases logging of the trainers, offline (no network, no account): the real wandb library records
every tracked metric of each iteration, and a resumed run continues the same W&B run."""

from __future__ import annotations

import math

import pytest

from agents.training.reporting import TRACKED, TrainingLog

pytest.importorskip("wandb")


def _iteration(i: int) -> dict[str, float]:
    return {"charts/episodic_return": 0.25 * i, "losses/kl": 1e-3 * i, "timers/sync_weights_s": math.nan}


@pytest.mark.slow
def test_offline_wandb_run_records_the_metrics_and_resumes_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = TrainingLog(tmp_path, wandb_project="research-gym-test", wandb_mode="offline", run_config={"lr": 1e-6})
    try:
        for i in (1, 2):
            log.write(i, _iteration(i))
        run = log.wandb_run
        assert run.offline and run.project == "research-gym-test" and run.config["lr"] == 1e-6
        assert run.summary["charts/episodic_return"] == 0.5 and run.summary["losses/kl"] == 2e-3
        assert "timers/sync_weights_s" not in set(run.summary.keys())  # NaN (not measured) is left out
        run_id = run.id
    finally:
        log.close()
    [record] = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert b"charts/episodic_return" in record.read_bytes()
    assert set(TRACKED) >= {"charts/episodic_return", "losses/kl"}

    resumed = TrainingLog(tmp_path, wandb_project="research-gym-test", wandb_mode="offline")
    try:
        assert resumed.wandb_run.id == run_id == (tmp_path / "wandb_run_id").read_text().strip()
        resumed.write(3, _iteration(3))
    finally:
        resumed.close()
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) >= 1


def test_without_wandb_nothing_is_started(tmp_path):
    log = TrainingLog(tmp_path)
    log.write(1, _iteration(1))
    log.close()
    assert log.wandb_run is None and not (tmp_path / "wandb").exists()
