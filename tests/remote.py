"""Local test files copied into the moto bucket, and the byte ranges read back from it."""

from __future__ import annotations

from pathlib import Path

import pytest


def upload(local: Path, url: str) -> str:
    """Copy the file `local`, or every file under the folder `local` (same relative keys), to
    `url`; returns `url`."""
    import s3fs

    if local.is_file():
        found = {url: local.read_bytes()}
    else:
        found = {
            f"{url}/{path.relative_to(local).as_posix()}": path.read_bytes()
            for path in sorted(local.rglob("*"))
            if path.is_file()
        }
    s3fs.S3FileSystem().pipe(found)
    return url


def record_fetches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """From now on, every byte range an s3fs file fetches as ``(key, start, end)``."""
    from s3fs.core import S3File

    fetched: list[tuple[str, int, int]] = []
    original = S3File._fetch_range

    def recording(self, start, end):
        fetched.append((self.path, start, end))
        return original(self, start, end)

    monkeypatch.setattr(S3File, "_fetch_range", recording)
    return fetched


def fetched_bytes(fetched: list[tuple[str, int, int]], key_end: str) -> int:
    """Bytes fetched from the object whose key ends with `key_end`."""
    return sum(end - start for key, start, end in fetched if key.endswith(key_end))
