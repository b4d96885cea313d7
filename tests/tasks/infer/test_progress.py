"""predict_blocks reports the share of blocks done, every 5 % (each report is an API call)."""

from __future__ import annotations

from types import SimpleNamespace

from segflow.tasks.infer import blocks


def test_progress_counts_done_blocks_every_five_percent(monkeypatch):
    regions = list(range(25))  # per image; blocks 0-4 of each image are already written
    monkeypatch.setattr(blocks, "blocks", lambda shape, block: regions)
    monkeypatch.setattr(blocks, "block_done", lambda out, name, region, block: region < 5)
    monkeypatch.setattr(blocks, "predict_block", lambda source, out, region, settings, target: None)
    sources = [SimpleNamespace(name=n, shape=(1, 9, 9)) for n in ("a", "b")]
    reports, lines = [], []
    result = blocks.predict_blocks(
        sources,
        "out.zarr",
        SimpleNamespace(block=256),
        workers=1,
        dask_address=None,
        log=lines.append,
        progress=lambda done, total: reports.append((done, total)),
    )
    assert result == (40, 10, {})
    assert reports == [(10 + k, 50) for k in range(2, 41, 2)]
    assert len(lines) == 20 and lines[-1] == "[40/40] blocks predicted"
