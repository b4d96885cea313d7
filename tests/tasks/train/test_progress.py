"""What training reports after each epoch: the log line and the share of the run done."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from segflow.tasks.train import tasks
from segflow.tasks.train.loop import EpochReport
from segflow.tasks.train.tasks import epoch_line
from segflow.tasks.train.validation import ValidationScores
from tests.images import make_store
from tests.tasks.train.test_loop import run_fit


def report(epoch, *, best=True, done=0.15, seconds_left=204.0, wall=12.0):
    scores = ValidationScores(0.6512, 0.5, 0.3, (0.6512,), (0.0, 0.1))
    return EpochReport(epoch, 0.41234, scores, 1e-3, 10.0, 9.14, best, 20, wall, seconds_left, done)


def test_epoch_line():
    assert epoch_line(report(2), member=0) == (
        "member 0 epoch 3/20: loss 0.4123, val Dice 0.6512 (best), 9.1 patches/s, 12 s/epoch, "
        "~3 min left"
    )
    line = epoch_line(report(19, best=False, done=1.0, seconds_left=0.0, wall=0.84), member=1)
    assert line == "member 1 epoch 20/20: loss 0.4123, val Dice 0.6512, 9.1 patches/s, 0.8 s/epoch"
    assert epoch_line(report(0, seconds_left=3 * 3600), member=0).endswith("~3.0 h left")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("progress"), count=6, size=64)


def test_fit_reports_the_share_done_and_time_left(store, tmp_path):
    _, _, reports = run_fit(store, tmp_path, epochs=3)
    assert [r.epochs for r in reports] == [3, 3, 3]
    assert [r.done for r in reports] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert reports[0].seconds_left == pytest.approx(2 * reports[0].wall_seconds)
    assert reports[-1].seconds_left == 0.0
    assert all(r.wall_seconds >= r.seconds > 0 for r in reports)


def test_the_time_budget_bounds_the_time_left(store, tmp_path):
    # A budget of 6 ms is spent by the first epoch: the run is done and nothing is left.
    _, result, reports = run_fit(store, tmp_path, epochs=50, max_minutes=1e-4)
    assert result.stopped == "time budget" and len(reports) == 1
    assert reports[0].done == 1.0 and reports[0].seconds_left == 0.0
    assert "left" not in epoch_line(reports[0], member=0)


def test_the_progress_artifact_advances_by_steps_and_ends_at_100(monkeypatch):
    """The train task's artifact, with the training faked: early stopping after 60 of 100
    epochs."""
    updates, lines = [], []
    monkeypatch.setattr(tasks, "create_progress_artifact", lambda *a, **k: "id")
    monkeypatch.setattr(tasks, "update_progress_artifact", lambda _, p: updates.append(p))
    logger = SimpleNamespace(info=lambda f, *args: lines.append(f % args))
    monkeypatch.setattr(tasks, "get_run_logger", lambda: logger)

    def train_model(balance, member, run, settings, on_epoch):
        for epoch in range(60):
            on_epoch(report(epoch, done=(epoch + 1) / 100))
        outcome = {"best_dice": 0.5, "best_epoch": 50, "epochs_done": 60, "val_dice": 0.5}
        return SimpleNamespace(**outcome, stopped="early stopping", kept="best", learned=True)

    monkeypatch.setattr(tasks.ensemble, "train_model", train_model)
    tasks.train_model.fn(None, 0, None, None)
    assert len(lines) == 61 and lines[0].startswith("member 0 epoch 1/20: ")
    assert updates == [5.0 * k for k in range(1, 13)] + [100.0]  # 13 API calls, not 61
