"""Ingest onto a full disk: the error names the sample, and the store stays indexed and whole."""

from __future__ import annotations

import errno

from segflow.flows.cli import main
from segflow.tasks.storage import dataset_writer
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import committed_samples
from tests.images import make_source


def test_disk_full_mid_ingest_indexes_the_committed_samples(tmp_path, monkeypatch, capsys):
    source = make_source(tmp_path / "src", n=6)
    store = tmp_path / "ds.zarr"
    real, writes = dataset_writer._write, []

    def fill_the_disk(target, data, workers):
        writes.append(target)
        if len(writes) == 8:  # the mask of the 4th sample, half written, then no space left
            target[: data.shape[0] // 2] = data[: data.shape[0] // 2]
            raise OSError(errno.ENOSPC, "No space left on device")
        real(target, data, workers)

    monkeypatch.setattr(dataset_writer, "_write", fill_the_disk)
    assert main(["ingest", str(source), str(store), "--workers", "1"]) == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr  # Prefect's log keeps the line, not the traceback
    error = stderr.strip().splitlines()[-1]
    assert error == (
        f"error: {store}: writing sample s03 ({source / 'images' / 's03.png'}) failed: "
        "[Errno 28] No space left on device"
    )
    committed = ["s00", "s01", "s02"]
    assert sorted(committed_samples(store)) == committed
    dataset = open_dataset(store)
    assert sorted(dataset.samples()) == committed  # every committed sample is in the split
    assert dataset.meta["num_samples"] == 3
    assert not (store / "images" / "s03").exists() and not (store / "masks" / "s03").exists()
    assert not any((store / ".staging").iterdir())  # nothing half-written left behind

    monkeypatch.setattr(dataset_writer, "_write", real)  # space freed: a re-run completes it
    assert main(["ingest", str(source), str(store), "--workers", "1"]) == 0
    assert sorted(open_dataset(store).samples()) == [f"s{i:02d}" for i in range(6)]
