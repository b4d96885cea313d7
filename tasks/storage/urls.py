"""Where a store or an input lives: a local path, or an fsspec URL (``s3://``, ``gs://``, ``az://``,
``memory://``; ``file://`` is a local path).

Remote stores open through zarr's own :class:`zarr.storage.FsspecStore`, files through fsspec.
Credentials and endpoints come from where the storage libraries look: ``AWS_*`` variables
(``AWS_ENDPOINT_URL`` included), fsspec's configuration (``FSSPEC_S3_*`` variables,
``~/.config/fsspec``), and a run's ``storage_options`` (:func:`use_options`). On top of that,
S3 connections give up within seconds instead of retrying for minutes (:data:`S3_DEFAULTS`), so
an unreachable endpoint ends a run quickly.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import zarr
from fsspec.core import url_to_fs
from zarr.storage import FsspecStore

# Seconds to connect and to wait for a reply, and the attempts per request, for s3://: an
# unreachable endpoint or a missing bucket fails in seconds (botocore: 60 s and 5 attempts).
# No listings cache: other processes (Dask workers) add samples and blocks that a cached
# listing of this process would not show.
S3_DEFAULTS: dict[str, Any] = {
    "use_listings_cache": False,
    # One request per whole-object read (above 1, s3fs first asks each object's size, for
    # parallel ranged reads of objects over 50 MB, which segflow never reads whole).
    "max_concurrency": 1,
    "config_kwargs": {
        "connect_timeout": 5,
        "read_timeout": 60,
        "retries": {"max_attempts": 3, "mode": "standard"},
    },
}


# Options given by a run's config (``storage_options``), per protocol, applied to this process
# by :func:`use_options` and to Dask workers by segflow.tasks.runtime.cluster.
_GIVEN: dict[str, dict[str, Any]] = {}


def use_options(options: dict[str, dict[str, Any]]) -> None:
    """Add `options` (per protocol: ``{"s3": {"endpoint_url": ...}}``) to fsspec's
    configuration of this process, which every filesystem opened from now on takes (over
    segflow's :data:`S3_DEFAULTS`)."""
    for protocol, values in options.items():
        fsspec.config.conf.setdefault(protocol, {}).update(values)
        _GIVEN.setdefault(protocol, {}).update(values)


def given_options() -> dict[str, dict[str, Any]]:
    """The options :func:`use_options` applied to this process (for its Dask workers)."""
    return {protocol: dict(values) for protocol, values in _GIVEN.items()}


def is_remote(location: str | Path) -> bool:
    """Whether `location` is a URL of a filesystem other than the local one."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path(location: str | Path) -> Path:
    """The filesystem path of a local `location` (``file://`` stripped).

    Raises
    ------
    ValueError
        `location` is a remote URL.
    """
    if is_remote(location):
        raise ValueError(f"{location}: a local path is needed here, not a URL")
    return Path(str(location).removeprefix("file://"))


def storage_options(location: str | Path) -> dict[str, Any]:
    """The options for the filesystem of `location`: segflow's defaults, overridden by
    fsspec's configuration (a run's `storage_options` included) — passed explicitly, they would
    otherwise override that configuration."""
    protocol = str(location).split("://", 1)[0]
    defaults = dict(S3_DEFAULTS) if protocol in ("s3", "s3a") else {}
    return {**defaults, **fsspec.config.conf.get(protocol, {})}


def join(location: str | Path, *parts: str) -> str:
    """`location` with `parts` appended (``/``-separated for URLs)."""
    if is_remote(location):
        return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts if p)])
    return str(local_path(location).joinpath(*parts))


def name_of(location: str | Path) -> str:
    """The last part of a path or URL (``s3://b/raw/`` -> ``raw``)."""
    return PurePosixPath(str(location).rstrip("/").split("://", 1)[-1]).name


def filesystem(location: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `location` and the path within it."""
    if not is_remote(location):
        return fsspec.filesystem("file"), str(local_path(location).absolute())
    return url_to_fs(str(location), **storage_options(location))


def read_bytes(location: str | Path) -> bytes:
    """The whole content of the file or object at `location`."""
    fs, path = filesystem(location)
    return fs.cat_file(path)


def reach_problem(location: str | Path) -> str | None:
    """None when `location` is local or its bucket answers; else one line naming the URL and
    the problem (unreachable endpoint, missing bucket, no credentials, access denied), within
    seconds (:data:`S3_DEFAULTS`)."""
    if not is_remote(location):
        return None
    try:
        fs, path = filesystem(location)
        fs.info(path.split("/", 1)[0])
    except FileNotFoundError:
        return f"{location}: the bucket {path.split('/', 1)[0]!r} does not exist"
    except PermissionError:
        return f"{location}: access denied (check the credentials and the bucket's policy)"
    except Exception as exc:  # botocore's own errors: connection, credentials, endpoint
        name = type(exc).__name__
        if name == "NoCredentialsError":
            return (
                f"{location}: no credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            )
        if "Connect" in name or "Endpoint" in name:
            return f"{location}: cannot reach the storage endpoint ({exc})"
        return f"{location}: {name}: {exc}"
    return None


def zarr_store(location: str | Path, *, read_only: bool = False) -> Path | FsspecStore:
    """What :func:`zarr.open_group` takes for `location`: the path of a local store, or an
    :class:`~zarr.storage.FsspecStore` of a remote one."""
    if not is_remote(location):
        return local_path(location)
    return FsspecStore.from_url(
        str(location), storage_options=storage_options(location), read_only=read_only
    )


def open_group(location: str | Path, path: str = "", *, mode: str = "r") -> zarr.Group:
    """The Zarr (v3) group at `path` inside the store at `location`."""
    store = zarr_store(location, read_only=mode == "r")
    if isinstance(store, Path):
        return zarr.open_group(store / path if path else store, mode=mode, zarr_format=3)
    # zarr_format: no look for v2 metadata (.zgroup, .zattrs: a request each on S3).
    return zarr.open_group(store, path=path, mode=mode, zarr_format=3)


def exists(location: str | Path, key: str = "") -> bool:
    """Whether the object or file `key` (``/``-separated) exists under `location`."""
    if not is_remote(location):
        return local_path(location).joinpath(key).exists()
    fs, root = filesystem(location)
    return fs.exists(f"{root.rstrip('/')}/{key}" if key else root)
