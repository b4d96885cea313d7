"""What the pipeline already did: one record per stage, keyed by everything the stage reads.

A stage whose key equals its recorded key has nothing new to do and is skipped; its recorded
result stands in for a new run. A key is written only after the stage finished, so an
interrupted stage runs again (and resumes by its own means: ingest and inference skip what is
stored, training continues its checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from segflow.tasks.storage.urls import filesystem, is_remote

LEDGER = "pipeline.json"


def stage_key(*parts: Any) -> str:
    """SHA-256 over JSON-serialisable parts (configs, upstream keys, data fingerprints)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def source_fingerprint(folder: str | Path) -> str:
    """SHA-256 over the relative path, size and modification time of every file under
    `folder` (of every object under a URL: size and ETag or modification time): changes
    when a file is added, removed, replaced or edited."""
    if is_remote(folder):
        fs, root = filesystem(folder)
        found = fs.find(root, detail=True)
        return stage_key(
            sorted(
                (name[len(root.rstrip("/")) + 1 :], info.get("size"), str(info.get("ETag")))
                for name, info in found.items()
            )
        )
    root = Path(folder)
    entries = sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    )
    return stage_key(entries)


class Ledger:
    """The ``pipeline.json`` of a work directory: ``{stage: {"key": ..., "result": ...}}``,
    plus the key of a stage that started and has not finished (``"started"``)."""

    def __init__(self, workdir: str | Path) -> None:
        self.path = Path(workdir) / LEDGER
        self.records: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )

    def done(self, stage: str, key: str) -> dict[str, Any] | None:
        """The recorded result of `stage` if it finished with this `key`, else None."""
        record = self.records.get(stage, {})
        return record.get("result") if record.get("key") == key else None

    def interrupted(self, stage: str, key: str) -> bool:
        """Whether `stage` started with this `key` and did not finish."""
        record = self.records.get(stage, {})
        return record.get("started") == key and record.get("key") != key

    def start(self, stage: str, key: str) -> None:
        self.records.setdefault(stage, {})["started"] = key
        self._save()

    def finish(self, stage: str, key: str, result: dict[str, Any]) -> None:
        self.records[stage] = {"key": key, "started": key, "result": result}
        self._save()

    def _save(self) -> None:
        """Write atomically: a crash leaves the old ledger or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.records, indent=2, sort_keys=True, default=str))
        os.replace(partial, self.path)
