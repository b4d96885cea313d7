"""Image headers, the size limits checked on them before decoding, and store names."""

from __future__ import annotations

import time

import pytest
import tifffile
from PIL import Image

from segflow.flows.config import InferConfig, IngestConfig
from segflow.tasks.storage.image_io import (
    InputError,
    SizeLimits,
    check_size,
    name_problem,
    probe_image,
)
from tests.images import crafted_jpeg, crafted_png, crafted_tiff

DEFAULTS = IngestConfig(source="src", store="ds.zarr").size_limits()


@pytest.fixture
def forbid_decoding(monkeypatch):
    """Call it to make any pixel decoding from then on fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    def forbid() -> None:
        monkeypatch.setattr(Image.Image, "load", refuse)
        monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)

    return forbid


CRAFTED = {
    "png": lambda d: crafted_png(d / "bomb.png", 13000, 13000),
    "rgba-png": lambda d: crafted_png(d / "bomb.png", 30000, 30000, channels=4),
    "jpeg": lambda d: crafted_jpeg(d / "bomb.jpg", 65000, 65000),
    "strip-tiff": lambda d: crafted_tiff(d / "bomb.tif", 20000, 20000, tiled=False),
    "tiled-tiff": lambda d: crafted_tiff(d / "bomb.tif", 60000, 60000, tiled=True),
}


@pytest.mark.parametrize("kind", CRAFTED)
def test_default_limits_refuse_crafted_headers_without_decoding(tmp_path, forbid_decoding, kind):
    """A file of a few hundred bytes declaring a huge image is refused from its header, with
    the file, its declared size, the limit and the option that raises it."""
    path = CRAFTED[kind](tmp_path)
    assert path.stat().st_size < 1000
    forbid_decoding()
    start = time.perf_counter()
    info = probe_image(path)
    with pytest.raises(InputError) as caught:
        check_size(info, DEFAULTS)
    assert time.perf_counter() - start < 1.0
    message = str(caught.value)
    assert message.startswith(f"{path}: declares {info.height}x{info.width}")
    assert f"{info.decoded_bytes / 2**20:.0f} MiB decoded" in message
    if kind == "tiled-tiff":
        assert f"max_tiled_pixels={DEFAULTS.max_tiled_pixels}" in message
        assert "raise --max-tiled-pixels" in message
    else:
        assert f"max_pixels={DEFAULTS.max_pixels}" in message and "raise --max-pixels" in message


def test_tiled_tiffs_stream_under_the_larger_limit_strip_tiffs_do_not(tmp_path):
    """Tiled TIFFs are read region by region, so they may be larger than images decoded whole;
    a strip TIFF is decoded whole and counts as such."""
    pixels = DEFAULTS.max_pixels * 4
    height, width = 16384, pixels // 16384
    tiled = probe_image(crafted_tiff(tmp_path / "tiled.tif", height, width, tiled=True))
    strip = probe_image(crafted_tiff(tmp_path / "strip.tif", height, width, tiled=False))
    assert tiled.tiled and not strip.tiled
    check_size(tiled, DEFAULTS)
    with pytest.raises(InputError, match="raise --max-pixels"):
        check_size(strip, DEFAULTS)


def test_a_raised_limit_is_not_overruled_by_pillow(tmp_path):
    """Pillow's own bomb check (an error above ~179 Mpx) must not refuse what the user allowed."""
    info = probe_image(crafted_png(tmp_path / "big.png", 20000, 20000))
    check_size(info, SizeLimits(max_pixels=20000 * 20000, max_tiled_pixels=20000 * 20000))
    with pytest.raises(InputError, match="exceeds max_pixels=399999999"):
        check_size(info, SizeLimits(max_pixels=20000 * 20000 - 1, max_tiled_pixels=10**12))


def test_ingest_and_infer_share_the_limits():
    infer = InferConfig(input="in", output="out.zarr").size_limits()
    assert infer == DEFAULTS == SizeLimits(max_pixels=2**27, max_tiled_pixels=2**31)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a", None),
        ("model_1", None),
        ("x.y", None),
        ("model", "reserved"),
        ("Model", "reserved"),
        ("zarr.json", "reserved"),
        (".x", "hidden"),
        (".", "hidden"),
        ("__x", "Zarr reserves"),
        ("", "empty"),
    ],
)
def test_names_a_store_cannot_hold(name, problem):
    found = name_problem(name)
    assert (found is None) if problem is None else (problem in found and repr(name) in found)
