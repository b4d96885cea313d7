"""Input files by local path or URL: list a folder, match a glob, open, read, checksum.

A *location* is a :class:`~pathlib.Path` for a local file (as before URLs were accepted) or the
URL itself, a ``str``, for an object in remote storage (``s3://bucket/raw/a.png``;
:mod:`segflow.tasks.storage.urls`). Names and checksums do not depend on where a file lives:
``s3://b/raw/a.png`` and ``/data/raw/a.png`` both name the sample ``a`` and, holding the same
bytes, have the same SHA-256.

Remote objects are read through fsspec in blocks, never downloaded whole unless they are
decoded whole: headers and tiles in :data:`HEADER_BLOCK` reads, whole files in
:data:`STREAM_BLOCK` reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from glob import glob as local_glob
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeVar

from segflow.tasks.storage import urls

Location = Path | str

# Bytes fetched beyond each read of a remote file: small for headers and TIFF tiles (a tile
# read fetches the tile and at most this much more), large for files read from end to end.
HEADER_BLOCK = 64 * 2**10
STREAM_BLOCK = 8 * 2**20

_T = TypeVar("_T")


class StorageError(OSError):
    """Remote storage that did not answer (unreachable endpoint, refused credentials)."""


def location(text: str | Path) -> Location:
    """The location `text` names: a :class:`Path` (``file://`` stripped), or the URL without
    trailing ``/``."""
    if urls.is_remote(text):
        return str(text).rstrip("/")
    return urls.local_path(text)


def name_of(where: Location) -> str:
    """The file or folder name (``s3://b/raw/a.png`` -> ``a.png``)."""
    return where.name if isinstance(where, Path) else urls.name_of(where)


def stem_of(where: Location) -> str:
    """The name without its last suffix, as :attr:`Path.stem` (``a.b.png`` -> ``a.b``)."""
    return PurePosixPath(name_of(where)).stem


def suffix_of(where: Location) -> str:
    """The last suffix of the name, as :attr:`Path.suffix` (``a.PNG`` -> ``.PNG``)."""
    return PurePosixPath(name_of(where)).suffix


def child(folder: Location, *names: str) -> Location:
    """`folder` / `names`."""
    return folder.joinpath(*names) if isinstance(folder, Path) else urls.join(folder, *names)


def resolved(where: Location) -> Location:
    """An absolute local path (symlinks resolved); a URL as it is."""
    return where.resolve() if isinstance(where, Path) else where


def _remote(where: str, action: str, call: Callable[[Any, str], _T], *, fresh: bool = True) -> _T:
    """``call(fs, path)`` on the filesystem of the URL `where`; `fresh` first drops what
    fsspec's listing cache holds for it (a process that serves flows lists again after the
    objects changed).

    Raises
    ------
    OSError
        What the filesystem raises (``FileNotFoundError``, ``PermissionError``).
    StorageError
        Anything else, naming `where`: an unreachable endpoint (botocore's errors are not
        ``OSError``), a protocol whose fsspec package is not installed (``gs://`` needs gcsfs).
    """
    try:
        fs, path = urls.filesystem(where)
        if fresh:
            fs.invalidate_cache(path)
        return call(fs, path)
    except OSError:
        raise
    except Exception as exc:
        raise StorageError(f"{where}: cannot {action} ({type(exc).__name__}: {exc})") from exc


def exists(where: Location) -> bool:
    """Whether a file or folder (a prefix holding objects) is at `where`."""
    if isinstance(where, Path):
        return where.exists()
    return _remote(where, "reach it", lambda fs, path: fs.exists(path))


def is_dir(where: Location) -> bool:
    """Whether `where` is a folder (remote: a prefix holding objects)."""
    if isinstance(where, Path):
        return where.is_dir()
    return _remote(where, "reach it", lambda fs, path: fs.isdir(path))


def is_file(where: Location) -> bool:
    """Whether `where` is a file (remote: an object)."""
    if isinstance(where, Path):
        return where.is_file()
    return _remote(where, "reach it", lambda fs, path: fs.isfile(path))


def entries(folder: Location) -> list[tuple[Location, bool]]:
    """What `folder` holds (not what its sub-folders hold), sorted: (location, whether it is a
    folder) of each entry.

    Raises
    ------
    OSError
        `folder` is missing or cannot be listed.
    """
    if isinstance(folder, Path):
        return [(path, path.is_dir()) for path in sorted(folder.iterdir())]

    found = _remote(folder, "list it", lambda fs, path: fs.ls(path, detail=True))
    return sorted(
        (urls.join(folder, urls.name_of(entry["name"])), entry["type"] == "directory")
        for entry in found
    )


def glob(pattern: str) -> list[Location]:
    """The files matching the glob `pattern` (a path or a URL), sorted."""
    if not urls.is_remote(pattern):
        return sorted(Path(p) for p in local_glob(pattern))

    def matches(fs, path):
        found = fs.glob(path, detail=True)
        return [fs.unstrip_protocol(p) for p, info in found.items() if info["type"] == "file"]

    return sorted(_remote(pattern, "list it", matches))


@contextmanager
def opened(where: Location, *, block: int = STREAM_BLOCK) -> Iterator[Path | IO[bytes]]:
    """What PIL and tifffile read `where` from: a local file's path, or an open fsspec file
    reading `block` bytes ahead (:data:`HEADER_BLOCK` for headers, :data:`STREAM_BLOCK` for
    whole files)."""
    if isinstance(where, Path):
        yield where
        return
    with open_remote(where, block=block) as file:
        yield file


def open_remote(where: str, *, block: int = HEADER_BLOCK) -> IO[bytes]:
    """An open fsspec file of the object at `where`, reading `block` bytes ahead of each read
    (the caller closes it; tifffile keeps one open for a TIFF read lazily)."""
    return _remote(
        where,
        "open it",
        # fresh: a listing's ETag would refuse an object rewritten since (s3fs's FileExpired)
        lambda fs, path: fs.open(path, "rb", block_size=block, cache_type="readahead"),
    )


def open_bytes(where: Location, *, block: int = STREAM_BLOCK) -> IO[bytes]:
    """The file open for reading bytes (remote: `block` bytes fetched ahead of each read)."""
    return open(where, "rb") if isinstance(where, Path) else open_remote(where, block=block)


def read_bytes(where: Location) -> bytes:
    """The whole file.

    Raises
    ------
    OSError
        Missing or unreadable (:class:`StorageError`: the storage did not answer).
    """
    if isinstance(where, Path):
        return where.read_bytes()
    return _remote(where, "read it", lambda fs, path: fs.cat_file(path), fresh=False)


def read_text(where: Location, encoding: str) -> str:
    """The whole file as text.

    Raises
    ------
    OSError
        Missing or unreadable (:class:`StorageError`: the storage did not answer).
    UnicodeDecodeError
        Not text in `encoding`.
    """
    if isinstance(where, Path):
        return where.read_text(encoding=encoding)
    return read_bytes(where).decode(encoding)


def sha256(where: Location, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in `block`-sized pieces."""
    digest = hashlib.sha256()
    with open_bytes(where) as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def version(where: Location) -> int | str:
    """What changes when the file is rewritten: its modification time in ns (local), or its
    ETag or modification time (remote)."""
    if isinstance(where, Path):
        return where.stat().st_mtime_ns
    info = _remote(where, "reach it", lambda fs, path: fs.info(path))
    return str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or info["size"])
