"""Checkpoint writes: each on a temporary of its own, renamed into place."""

from __future__ import annotations

import pytest
import torch

from segflow.tasks.train import checkpoints
from segflow.tasks.train.checkpoints import PARTIAL_SUFFIX, load_checkpoint, save_checkpoint


def test_interleaved_writers_each_use_their_own_temporary(tmp_path, monkeypatch):
    """A second save starting while the first one writes (another writer of the same file)
    must neither share its temporary nor make it fail."""
    real_save, temporaries = torch.save, []

    def save_and_interleave(payload, file):
        temporaries.append({p.name for p in target.parent.glob(f"*{PARTIAL_SUFFIX}")})
        if payload["writer"] == 1:
            save_checkpoint(target, {"writer": 2, "w": torch.full((3,), 2.0)})
        real_save(payload, file)

    target = tmp_path / "member_0" / "last.pt"
    monkeypatch.setattr(checkpoints.torch, "save", save_and_interleave)
    save_checkpoint(target, {"writer": 1, "w": torch.full((3,), 1.0)})
    # The second writer found the first one's temporary and made one beside it.
    assert len(temporaries[1]) == 2 and temporaries[0] < temporaries[1]
    state = load_checkpoint(target)  # the later rename wins, complete
    assert state["writer"] == 1 and torch.equal(state["w"], torch.full((3,), 1.0))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"]


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "best.pt"
    save_checkpoint(target, {"epoch": 1})

    def disk_full(payload, file):
        file.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(target, {"epoch": 2})
    assert load_checkpoint(target) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
