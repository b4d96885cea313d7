"""Settings of the ``infer-images`` flow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from segflow.flows.config.base import (
    Frozen,
    StorageOptions,
    max_pixels_field,
    max_tiled_pixels_field,
    storage_options_field,
)

if TYPE_CHECKING:
    from segflow.tasks.infer.blocks import BlockSettings, Parallelism
    from segflow.tasks.storage.image_io import SizeLimits

# Not a flow setting: inference always runs channels_last, measured faster than NCHW here
# (the folded network 1.7x in fp32, benchmarks/README.md "CPU probes"; 2x in bf16 for 1-channel
# inputs, see segflow.tasks.infer.blocks.worker_model).
CHANNELS_LAST = True


class InferConfig(Frozen):
    """Settings of the `infer-images` flow (Dask-parallel tiled inference)."""

    input: str = Field(
        ...,
        description="A dataset store, a Zarr array, a (Big)TIFF, a PNG/JPEG, a folder or a glob.",
    )
    output: str = Field(..., description="Prediction store (Zarr v3, OME-Zarr) to write.")
    model: str = Field(
        "models:/segflow-unet@newest",
        description="MLflow model URI (models:/name@alias, runs:/id/model) or a bundle folder.",
    )
    workdir: str = Field("work", description="Holds the default MLflow database.")
    split: Literal["train", "val", "test"] | None = Field(
        None, description="Dataset store input: predict only this split."
    )
    max_pixels: int = max_pixels_field()
    max_tiled_pixels: int = max_tiled_pixels_field()
    tile: int = Field(
        1024,
        ge=16,
        le=8192,
        description="overlap-tile: output tile side (the model sees tile + 2 margin; the "
        "last tile of an axis absorbs a remainder under tile/2, so up to 1.5 tile); "
        "gaussian: window side.",
    )
    blend: Literal["overlap-tile", "gaussian"] = Field(
        "overlap-tile", description="overlap-tile (U-Net paper) or gaussian (nnU-Net, MONAI)."
    )
    margin: int = Field(
        32,
        ge=0,
        description="Mirrored context pixels: per tile (overlap-tile), at the image "
        "edges (gaussian). Keep it a multiple of 2**depth; 48 for models with many pixels "
        "near the threshold (benchmarks/README.md, seam error).",
    )
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="gaussian: tile overlap fraction.")
    batch: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Tiles per forward pass (default: 1 on CPU, where bigger batches are "
        "slower per tile, 4 on CUDA).",
    )
    tta: bool = Field(False, description="Average over flips (4x the compute).")
    threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Binary mask threshold (default: the model's, chosen on validation; 0.5 "
        "for models trained before segflow chose one).",
    )
    probability_dtype: Literal["uint8", "float16"] = Field(
        "uint8", description="Stored probabilities: uint8 (p*255) or float16."
    )
    block: int = Field(
        2048,
        ge=256,
        le=16384,
        description="Pixels per side of a Dask task and of a shard (the last block of "
        "an axis absorbs a remainder under block/2).",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Dask workers (default: one per GPU, else one per two cores).",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="Torch threads per worker (default: cores / workers)."
    )
    dask_address: str | None = Field(None, description="Use this Dask scheduler instead.")
    storage_options: StorageOptions = storage_options_field()
    instances: bool = Field(False, description="Also label connected components (objects).")
    min_object_size: int = Field(0, ge=0, description="Instances: drop smaller objects (px).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to predict.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast dtype; auto = bf16 where fast, else fp32."
    )

    @model_validator(mode="after")
    def _check_geometry(self) -> InferConfig:
        if self.blend == "overlap-tile" and self.block % self.tile:
            raise ValueError(
                f"block {self.block} must be a multiple of tile {self.tile}: a tile crossing "
                "blocks would be predicted twice"
            )
        if self.block % 256:
            raise ValueError(f"block must be a multiple of 256 (the chunk), got {self.block}")
        return self

    def size_limits(self) -> SizeLimits:
        """The largest input image files accepted, checked on their headers before decoding."""
        from segflow.tasks.storage.image_io import SizeLimits

        return SizeLimits(max_pixels=self.max_pixels, max_tiled_pixels=self.max_tiled_pixels)

    def parallelism(self) -> Parallelism:
        """Workers, tiles per forward and torch threads: as given, else this machine's defaults
        (:func:`segflow.tasks.infer.blocks.resolve_parallelism`)."""
        # imported here, not at the top: the CLI reads this module and starts without torch
        from segflow.tasks.infer.blocks import resolve_parallelism

        return resolve_parallelism(
            self.device, workers=self.workers, batch=self.batch, torch_threads=self.torch_threads
        )

    def block_settings(self, bundle: str, parallelism: Parallelism) -> BlockSettings:
        """What each worker needs to predict a block with the model bundle folder `bundle`."""
        from segflow.tasks.infer.blocks import BlockSettings
        from segflow.tasks.infer.tiling import Tiling

        return BlockSettings(
            bundle=bundle,
            tiling=Tiling(
                tile=self.tile, blend=self.blend, margin=self.margin, overlap=self.overlap
            ),
            batch=parallelism.batch,
            tta=self.tta,
            threshold=self.threshold,
            precision=self.precision,
            device=self.device,
            channels_last=CHANNELS_LAST,
            probability_dtype=self.probability_dtype,
            block=self.block,
            torch_threads=parallelism.torch_threads,
        )
