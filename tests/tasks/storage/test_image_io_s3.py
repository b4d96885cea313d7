"""Image files read from s3:// give what the same files give locally; headers and tiles are
fetched by range, not by downloading the object."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from segflow.tasks.storage.image_io import (
    InputError,
    SizeLimits,
    check_size,
    open_lazy,
    probe_image,
    read_image,
    sha256_file,
)
from tests.images import crafted_tiff, random_image, save
from tests.remote import fetched_bytes, record_fetches, upload
from tests.servers import Bucket

FILES = {
    "grey.png": ((37, 51), "uint8", {}),
    "grey16.png": ((37, 51), "uint16", {}),
    "rgba.png": ((20, 30, 4), "uint8", {}),
    "rgb.jpg": ((33, 47, 3), "uint8", {}),
    "strip.tif": ((37, 51, 3), "uint8", {"compression": "zlib"}),
    "tiled.tiff": ((300, 270), "uint16", {"bigtiff": True, "tile": (64, 64)}),
}


@pytest.fixture
def pictures(tmp_path, s3: Bucket):
    """Each file of FILES written locally and uploaded: name -> (local path, URL)."""
    rng = np.random.default_rng(0)
    found = {}
    for name, (shape, dtype, tiff) in FILES.items():
        path = save(tmp_path / name, random_image(rng, shape, dtype), **tiff)
        found[name] = path, upload(path, s3.url("in", name))
    return found


def test_headers_pixels_and_checksums_equal_the_local_ones(pictures):
    for name, (path, url) in pictures.items():
        local, remote = probe_image(path), probe_image(url)
        assert remote.path == url and local.path == path
        fields = ("height", "width", "channels", "dtype", "tiled", "is_tiff")
        assert [getattr(remote, f) for f in fields] == [getattr(local, f) for f in fields], name
        np.testing.assert_array_equal(read_image(remote), read_image(local), err_msg=name)
        assert sha256_file(url) == sha256_file(path), name


def test_a_tiled_tiff_reads_lazily_by_tile(tmp_path, s3: Bucket, monkeypatch):
    """A 4 MiB tiled TIFF read as a Dask array: one 256² chunk fetches that tile and little
    more, and the whole array equals the local one."""
    pixels = random_image(np.random.default_rng(1), (2048, 2048), "uint8")
    path = save(tmp_path / "big.tif", pixels, tile=(256, 256))
    url = upload(path, s3.url("big.tif"))
    fetched = record_fetches(monkeypatch)
    array = open_lazy(probe_image(url), (256, 256))
    np.testing.assert_array_equal(
        array[:, 256:512, 512:768].compute(), pixels[None, 256:512, 512:768]
    )
    assert fetched_bytes(fetched, "big.tif") < path.stat().st_size / 8
    local = open_lazy(probe_image(path), (256, 256))
    assert array.shape == local.shape == (1, 2048, 2048) and array.chunks == local.chunks
    np.testing.assert_array_equal(array.compute(), local.compute())


@pytest.mark.parametrize("name", ["big.png", "big.jpg"])
def test_png_and_jpeg_headers_are_probed_from_the_first_bytes(tmp_path, s3, monkeypatch, name):
    path = save(tmp_path / name, random_image(np.random.default_rng(2), (1024, 1536, 3)))
    url = upload(path, s3.url(name))
    fetched = record_fetches(monkeypatch)
    info = probe_image(url)
    assert (info.height, info.width, info.channels) == (1024, 1536, 3)
    assert 0 < fetched_bytes(fetched, name) < path.stat().st_size / 4


def test_a_crafted_header_on_s3_is_refused_before_decoding(tmp_path, s3: Bucket, monkeypatch):
    """A few hundred bytes declaring 60000² pixels: refused from the header, naming the URL."""
    url = upload(crafted_tiff(tmp_path / "bomb.tif", 60000, 60000, tiled=True), s3.url("b.tif"))
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("decoded"))
    info = probe_image(url)
    assert (info.height, info.width, info.tiled) == (60000, 60000, True)
    with pytest.raises(InputError, match=f"^{url}: declares 60000x60000 .*max_tiled_pixels="):
        check_size(info, SizeLimits(max_pixels=2**27, max_tiled_pixels=2**31))


def test_missing_and_unreadable_objects_are_input_errors_naming_the_url(s3: Bucket):
    import s3fs

    s3fs.S3FileSystem().pipe_file(s3.url("in", "junk.png"), b"\x89PNG truncated")
    for key, problem in (("missing.png", "FileNotFoundError"), ("junk.png", "unreadable image")):
        url = s3.url("in", key)
        with pytest.raises(InputError) as caught:
            probe_image(url)
        assert str(caught.value).startswith(f"{url}: ") and problem in str(caught.value)
        assert "\n" not in str(caught.value)
