"""Patch dataset, training loop, checkpoints and resume on a tiny synthetic store (CPU, fp32)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.flows.config import TrainConfig
from segflow.models.losses import build_loss
from segflow.models.unet import build_unet
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.train.checkpoints import Progress, kept_weights, load_checkpoint
from segflow.tasks.train.locations import foreground_locations
from segflow.tasks.train.loop import fit, stop_reason
from segflow.tasks.train.normalization import channel_statistics
from segflow.tasks.train.patches import PatchDataset, read_patch
from segflow.tasks.train.sampling import build_plan
from tests.images import make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("train"), count=8, size=96)


def patch_data(store, length=16, seed=0):
    dataset = open_dataset(store)
    train = dataset.samples("train")
    counts = {s: dataset.class_counts(s) for s in train}
    plan = build_plan(counts, TrainConfig(store=str(store), patch_size=64, seed=seed).sampling())
    locations = {s: foreground_locations(dataset.mask(s), (1,), counts[s], seed=0) for s in train}
    norm = channel_statistics(dataset, train)
    return PatchDataset(str(store), plan, locations, norm, length=length, binary_class=1), norm


def test_patches_are_a_function_of_epoch_and_index(store):
    data, _ = patch_data(store)
    image, target = data[3]
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert target.shape == (1, 64, 64) and set(target.unique().tolist()) <= {0.0, 1.0}
    again, _ = patch_data(store)
    assert torch.equal(again[3][0], image)
    assert not torch.equal(data[3 + len(data)][0], image)  # same k, next epoch


def test_small_image_is_padded_by_mirroring(store):
    dataset = open_dataset(store)
    sample = dataset.samples("train")[0]
    image, mask = read_patch(dataset, sample, 80, 90, 32)
    assert image.shape == (1, 32, 32) and mask.shape == (32, 32)
    np.testing.assert_array_equal(
        mask[:16, 6:12], np.asarray(dataset.mask(sample)[80:96, 90:96])[:, ::-1]
    )


class Interrupted(Exception):
    pass


def run_fit(store, folder, epochs, resume=False, seed=0, interrupt_after=None, **settings):
    data, _ = patch_data(store, length=16)
    torch.manual_seed(seed)
    model = build_unet(in_channels=1, num_classes=1, depth=2, base_channels=4)
    reports = []

    def on_epoch(report):
        reports.append(report)
        if report.epoch == interrupt_after:
            raise Interrupted  # as if killed right after the epoch's checkpoint

    settings = TrainConfig(
        store=str(store),
        epochs=epochs,
        batch_size=4,
        lr=1e-2,
        weight_decay=0.0,
        device="cpu",
        precision="fp32",
        channels_last=False,
        num_workers=0,
        val_max_tiles=256,
        patience=0,
        resume=resume,
        **settings,
    ).loop()
    result = fit(
        model,
        data,
        open_dataset(store).samples("val"),
        build_loss("bce_dice", num_classes=1),
        settings,
        checkpoint_dir=folder,
        config={"k": 1},
        on_epoch=on_epoch,
    )
    return model, result, reports


def test_training_lowers_the_loss_and_checkpoints(store, tmp_path):
    _, result, reports = run_fit(store, tmp_path, epochs=4)
    assert result.epochs_done == 4
    assert reports[-1].train_loss < reports[0].train_loss
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 3 and state["config"] == {"k": 1}
    assert (tmp_path / "best.pt").exists()


def test_fit_reports_the_last_epochs_val_dice(store, tmp_path):
    _, result, reports = run_fit(store, tmp_path, epochs=3)
    assert result.last_dice == reports[-1].scores.dice
    assert result.best_dice == max(r.scores.dice for r in reports)
    _, again, _ = run_fit(store, tmp_path, epochs=3, resume=True)  # nothing left to train
    assert (again.last_dice, again.best_dice) == (result.last_dice, result.best_dice)


def test_resume_of_a_checkpoint_without_the_last_dice(store, tmp_path):
    run_fit(store, tmp_path, epochs=2)
    state = load_checkpoint(tmp_path / "last.pt")
    del state["dice"]  # as written by earlier versions
    torch.save(state, tmp_path / "last.pt")
    _, result, _ = run_fit(store, tmp_path, epochs=2, resume=True)
    assert np.isnan(result.last_dice) and result.best_dice >= 0


@pytest.mark.parametrize(
    ("weights", "stopped", "kept"),
    [
        ("auto", "epochs", "last"),
        ("auto", "time budget", "last"),
        ("auto", "early stopping", "best"),
        ("best", "time budget", "best"),
        ("last", "early stopping", "last"),
        ("ema", "time budget", "ema"),
        ("ema", "early stopping", "ema"),
    ],
)
def test_kept_weights(weights, stopped, kept):
    assert kept_weights(weights, stopped) == kept


def test_time_budget_stops_after_the_epoch_that_spends_it(store, tmp_path):
    _, result, reports = run_fit(store, tmp_path, epochs=5, max_minutes=1e-5)
    assert result.stopped == "time budget" and result.epochs_done == len(reports) == 1


def test_patience_counts_epochs_without_a_better_val_dice():
    progress = Progress(epoch=-1, dice=-1.0, best_dice=-1.0, best_epoch=-1, stale=0)
    for epoch, dice in enumerate([0.5, 0.6, 0.6, 0.4]):
        improved = progress.update(epoch, dice)
        assert improved == (epoch in (0, 1))
        assert stop_reason(progress, patience=2, deadline=None) == (
            "early stopping" if epoch == 3 else None
        )
    assert (progress.best_epoch, progress.best_dice, progress.dice) == (1, 0.6, 0.4)
    assert stop_reason(progress, patience=0, deadline=None) is None  # 0: never stop early


def test_kept_weights_rejects_unknown_choices():
    with pytest.raises(ValueError, match="auto, best, last or ema, got 'swa'"):
        kept_weights("swa", "epochs")
    with pytest.raises(ValueError, match="auto, best, last or ema"):
        kept_weights(None, "epochs")


def test_resume_continues_exactly(store, tmp_path):
    straight, _, _ = run_fit(store, tmp_path / "a", epochs=3)
    with pytest.raises(Interrupted):
        run_fit(store, tmp_path / "b", epochs=3, interrupt_after=1)
    resumed, result, reports = run_fit(store, tmp_path / "b", epochs=3, resume=True, seed=99)
    assert [r.epoch for r in reports] == [2]
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.tasks.train.test_loop import run_fit
    run_fit(Path(sys.argv[1]), Path(sys.argv[2]), epochs=40, resume=True)
    """
)


def test_killed_run_resumes_from_its_last_checkpoint(store, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILLED_RUN)
    folder = tmp_path / "run"
    root = Path(__file__).parents[3]
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store), str(folder)],
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    deadline = time.monotonic() + 120
    while not (folder / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(folder / "last.pt")["epoch"]
    assert done < 39
    _, result, reports = run_fit(store, folder, epochs=done + 2, resume=True)
    assert [r.epoch for r in reports] == [done + 1]


def test_finished_run_is_extended_by_more_epochs(store, tmp_path):
    run_fit(store, tmp_path, epochs=2)
    _, result, reports = run_fit(store, tmp_path, epochs=3, resume=True)
    assert [r.epoch for r in reports] == [2] and result.epochs_done == 3
