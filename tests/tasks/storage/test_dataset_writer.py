"""The dataset store's writer side: atomic replacement, staging owned by its writer, the lock."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from segflow.tasks.runtime.locks import LockHeld, hold, lock_path
from segflow.tasks.storage import dataset_writer, swap
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import (
    committed_samples,
    init_store,
    write_index,
    write_sample,
)
from tests.tasks.runtime.test_locks import start_holder

CLASSES = ("background", "foreground")


def version(seed: int) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """One version of sample ``s``: image, mask and their attributes (tied by sha)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 255, size=(1, 64, 64), dtype=np.uint8)  # never the fill value 0
    mask = (rng.random((64, 64)) < 0.3).astype(np.uint8)
    sha = f"{seed:064d}"
    image_attrs = {"sha256": sha}
    mask_attrs = {"sha256": sha, "image_sha256": sha, "class_counts": [1, 1]}
    return image, mask, image_attrs, mask_attrs


def put(store, seed: int) -> None:
    image, mask, image_attrs, mask_attrs = version(seed)
    write_sample(store, "s", image, mask, image_attrs=image_attrs, mask_attrs=mask_attrs)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.zarr"
    init_store(path, class_names=CLASSES)
    return path


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file under `folder`, read through one descriptor of the folder, or None when the
    folder was swapped away meanwhile (its remains are then the writer's to delete).

    Zarr's own reads go by path, one file at a time, so they could mix two versions.

    Raises
    ------
    FileNotFoundError
        Nothing is at `folder`.
    """
    top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        files = {}
        for path, _, names, fd in os.fwalk(dir_fd=top):
            for name in names:
                try:
                    handle = os.open(name, os.O_RDONLY, dir_fd=fd)
                except FileNotFoundError:
                    continue  # compared below, unless the folder is no longer at its place
                with os.fdopen(handle, "rb") as file:
                    files[os.path.join(path, name)] = file.read()
        # While `top` is open its inode cannot be reused: same number, same folder.
        stayed = os.stat(folder).st_ino == os.fstat(top).st_ino
        return files if stayed else None
    except FileNotFoundError:
        return None  # the folder went while it was read: swapped away, checked next time
    finally:
        os.close(top)


def _watch(store: Path, expected: list[dict], stop: threading.Event, seen: list[str]) -> None:
    """Until `stop`: each array of sample ``s`` must be one complete version, file for file."""
    while not stop.is_set():
        for group in ("images", "masks"):
            try:
                files = snapshot(store / group / "s")
            except FileNotFoundError as exc:  # the moment the writer left the array out
                seen.append(f"missing: {exc}")
                continue
            if files is not None and files not in [version[group] for version in expected]:
                seen.append(f"{group}: neither version ({sorted(files)})")


def reference(tmp_path: Path, seed: int) -> dict[str, dict[str, bytes]]:
    """The files of version `seed` of sample ``s``, per group, as a fresh store holds them."""
    store = tmp_path / f"reference-{seed}.zarr"
    init_store(store, class_names=CLASSES)
    put(store, seed)
    return {group: snapshot(store / group / "s") for group in ("images", "masks")}


@pytest.mark.parametrize("atomic", [True, False], ids=["renameat2", "fallback"])
def test_replacing_a_sample_never_shows_a_missing_or_half_array(store, monkeypatch, atomic):
    if not atomic:
        monkeypatch.setattr(swap, "_RENAMEAT2", None)
    elif swap._RENAMEAT2 is None:
        pytest.skip("no renameat2 here")
    expected = [reference(store.parent, seed) for seed in (1, 2)]
    put(store, 1)
    assert {g: snapshot(store / g / "s") for g in ("images", "masks")} == expected[0]
    stop, seen = threading.Event(), []
    reader = threading.Thread(target=_watch, args=(store, expected, stop, seen))
    reader.start()
    try:
        for turn in range(150):
            put(store, 1 + turn % 2)
    finally:
        stop.set()
        reader.join()
    if atomic:
        assert seen == []
    else:  # the documented fallback: a moment without the array, never a half-written one
        assert all(s.startswith("missing") for s in seen), seen
    assert list(committed_samples(store)) == ["s"]
    np.testing.assert_array_equal(open_dataset(store).image("s")[...], version(2)[0])
    assert not any((store / ".staging").iterdir())  # the old copies went with their entries


def test_a_writer_killed_between_the_two_swaps_leaves_the_sample_not_committed(store, monkeypatch):
    put(store, 1)
    assert committed_samples(store)["s"].image_sha256 == version(1)[2]["sha256"]
    swapped = []

    def killed_before_the_mask(staged, final):
        if swapped:
            raise KeyboardInterrupt
        swapped.append(swap.swap_in(staged, final))

    monkeypatch.setattr(dataset_writer, "swap_in", killed_before_the_mask)
    with pytest.raises(KeyboardInterrupt):
        put(store, 2)
    monkeypatch.undo()
    assert committed_samples(store) == {}  # a new image beside the old mask: not a pair
    put(store, 2)
    assert committed_samples(store)["s"].mask_sha256 == version(2)[3]["sha256"]


def test_a_failed_write_removes_its_staging_and_keeps_the_stored_sample(store, monkeypatch):
    put(store, 1)
    real = dataset_writer._write

    def disk_full(target, data, workers):
        if target.ndim == 2:  # the mask, half written after the whole image was staged
            target[:32] = data[:32]
            raise OSError(errno.ENOSPC, "No space left on device")
        real(target, data, workers)

    monkeypatch.setattr(dataset_writer, "_write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        put(store, 2)
    assert not any((store / ".staging").iterdir())
    assert list(committed_samples(store)) == ["s"]
    np.testing.assert_array_equal(open_dataset(store).image("s")[...], version(1)[0])


def test_staging_of_a_live_writer_is_left_alone_and_a_dead_ones_swept(store):
    entry = store / ".staging" / "s-0123abcd"
    entry.mkdir(parents=True)
    holder = start_holder(store)
    try:
        init_store(store, class_names=CLASSES)  # another process writes: not ours to remove
        assert entry.exists()
    finally:
        holder.kill()
        holder.wait()
    init_store(store, class_names=CLASSES)  # its writer is gone: a leftover
    assert not entry.exists()


def test_index_write_waits_for_the_lock_then_names_the_holder(store, monkeypatch):
    monkeypatch.setattr(dataset_writer, "INDEX_LOCK_WAIT", 0.3)
    holder = start_holder(store)
    try:
        with pytest.raises(LockHeld, match=f"PID {holder.pid} "):
            write_index(store, {"sampling_plan": {"x": 1}})
    finally:
        holder.kill()
        holder.wait()
    write_index(store, {"sampling_plan": {"x": 1}})
    assert open_dataset(store).meta["sampling_plan"] == {"x": 1}


def test_lock_file_does_not_break_the_store(store):
    put(store, 1)
    write_index(store, {"split": {"train": ["s"], "val": [], "test": []}})
    with hold(store):
        assert lock_path(store).stat().st_size > 0
        assert not any(p.name.endswith(".lock") for p in store.iterdir())  # nothing but Zarr
        assert sorted(zarr.open_group(store, mode="r").keys()) == ["images", "masks"]
        assert open_dataset(store).samples("train") == ["s"]
        assert list(committed_samples(store)) == ["s"]
        init_store(store, class_names=CLASSES)  # the store is still recognised as one


def test_a_new_store_holding_only_the_lock_file_is_not_foreign(tmp_path):
    with dataset_writer.lock_store(tmp_path / "new.zarr"):
        init_store(tmp_path / "new.zarr", class_names=CLASSES)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a Zarr store"):
        dataset_writer.lock_store(tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["precious.txt"]


def test_sample_ids_with_glob_characters_are_committed(tmp_path):
    store = tmp_path / "exp[1]" / "store.zarr"
    init_store(store, class_names=CLASSES)
    image, mask, image_attrs, mask_attrs = version(1)
    for sample_id in ("a[1]", "b*", "c?"):
        write_sample(store, sample_id, image, mask, image_attrs=image_attrs, mask_attrs=mask_attrs)
    assert sorted(committed_samples(store)) == ["a[1]", "b*", "c?"]
