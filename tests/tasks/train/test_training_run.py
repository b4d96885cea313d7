"""The training run folder under its writer lock: a fresh start keeps the lock, a resume sweeps
the checkpoint temporaries a killed run left."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from segflow.tasks.runtime.locks import hold, lock_path
from segflow.tasks.train import training_run
from segflow.tasks.train.training_run import RunSettings, open_training_run, run_folder

TRY_LOCK = (
    "import sys\nfrom segflow.tasks.runtime.locks import LockHeld, hold\n"
    "try:\n    with hold(sys.argv[1]): print('free')\nexcept LockHeld: print('held')\n"
)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Run settings, with MLflow and the dataset replaced by stand-ins."""
    monkeypatch.setattr(training_run, "configure_tracking", lambda *args: None)
    monkeypatch.setattr(training_run, "start_training_run", lambda *args, **kwargs: "run-2")
    monkeypatch.setattr(training_run, "open_dataset", lambda store: None)
    monkeypatch.setattr(training_run, "dataset_fingerprint", lambda dataset: "0" * 64)
    return RunSettings(tmp_path / "work", "segflow", "unet", resume=False, params={})


BALANCE = SimpleNamespace(
    store="ds.zarr",
    train_ids=["a"],
    class_names=["bg", "fg"],
    fractions_before=[0.9, 0.1],
    fractions_after=[0.8, 0.2],
    levers=SimpleNamespace(params=dict, markdown=lambda names: ""),
)


def other_process_sees(folder) -> str:
    done = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(folder)], capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def test_a_fresh_start_clears_the_folder_but_keeps_holding_its_lock(settings):
    folder = run_folder(settings)
    (folder / "member_0").mkdir(parents=True)
    (folder / "member_0" / "last.pt").write_bytes(b"old")
    (folder / training_run.RUN_ID_FILE).write_text("run-1")
    with hold(folder):
        run = open_training_run(BALANCE, settings, None)
        assert run == training_run.TrainingRun("run-2", folder)
        assert sorted(p.name for p in folder.iterdir()) == [training_run.RUN_ID_FILE]
        assert lock_path(folder).exists()
        assert other_process_sees(folder) == "held"


def test_a_resume_sweeps_checkpoint_temporaries(settings):
    folder = run_folder(settings)
    (folder / "member_0").mkdir(parents=True)
    (folder / "member_0" / "last.pt").write_bytes(b"kept")
    (folder / "member_0" / ".last.pt.k3x9.partial").write_bytes(b"half")
    (folder / training_run.RUN_ID_FILE).write_text("run-1")
    resumed = RunSettings(**{**settings.__dict__, "resume": True})
    with hold(folder):
        assert open_training_run(BALANCE, resumed, None).run_id == "run-1"
    assert sorted(p.name for p in (folder / "member_0").iterdir()) == ["last.pt"]
