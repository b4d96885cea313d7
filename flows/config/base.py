"""The base of every flow config: frozen, no unknown fields."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


def max_pixels_field() -> Any:
    """`max_pixels` of the ingest and infer configs (one default for both stages).

    2**27 pixels (e.g. 11585²): decoding a PNG and its mask costs an ingest worker 11 B/pixel
    (grey) to 14 B/pixel (RGBA) of peak memory (measured: 6000² PNGs, 463 and 566 MiB), so
    1.4 to 1.8 GiB at the limit: one worker per core on an 8-core 24 GB machine stays under
    15 GB. Inference holds a decoded PNG/JPEG (H * W * channels * bytes) per worker.
    """
    return Field(
        2**27,
        ge=1,
        description="Refuse PNG, JPEG and untiled TIFF images with more pixels (H*W) than this, "
        "from the header, before decoding: they are decoded whole. Tiled TIFFs: max_tiled_pixels.",
    )


def max_tiled_pixels_field() -> Any:
    """`max_tiled_pixels` of the ingest and infer configs (one default for both stages).

    2**31 pixels (e.g. 46340²): tiled TIFFs are read region by region, so memory does not grow
    with the image; the limit bounds work and disk instead (an RGB image at the limit is 6 GiB
    of pixels). A header declaring more is more often broken or crafted than real: raise it for
    whole-slide images.
    """
    return Field(
        2**31,
        ge=1,
        description="Refuse tiled TIFFs (read region by region) with more pixels (H*W) than this.",
    )


def storage_options_field() -> Any:
    """`storage_options` of every stage config: fsspec options per protocol."""
    return Field(
        default_factory=dict,
        description='fsspec options per protocol for URLs, as JSON, e.g. {"s3": {"endpoint_url": '
        '"https://s3.example.com"}}; they add to AWS_* variables and fsspec\'s config. Values show '
        "in Prefect's UI: keep secrets in the environment.",
    )


StorageOptions = dict[str, dict[str, Any]]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
