"""Loaded at start by every Python process that has this folder on ``PYTHONPATH`` (a command
of the crash tests and its Dask workers): with ``SEGFLOW_TEST_S3_CHUNK_DELAY`` set, each chunk
(shard) PUT or upload through s3fs waits that many seconds first, so that a sample's arrays stay
half-written long enough for a poll, or a SIGKILL, to meet them."""

import os

if delay := float(os.environ.get("SEGFLOW_TEST_S3_CHUNK_DELAY", "0")):
    import asyncio

    import s3fs

    _pipe_file = s3fs.S3FileSystem._pipe_file

    async def _late_pipe_file(self, path, data, *args, **kwargs):
        if "/c/" in path:  # a chunk key (zarr v3); metadata (zarr.json) goes at once
            await asyncio.sleep(delay)
        return await _pipe_file(self, path, data, *args, **kwargs)

    s3fs.S3FileSystem._pipe_file = _late_pipe_file

    _put_file = s3fs.S3FileSystem._put_file

    async def _late_put_file(self, lpath, rpath, *args, **kwargs):
        if "/c/" in rpath:  # a chunk uploaded from a staging folder
            await asyncio.sleep(delay)
        return await _put_file(self, lpath, rpath, *args, **kwargs)

    s3fs.S3FileSystem._put_file = _late_put_file
