"""Settings of the ``ingest-dataset`` flow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from segflow.flows.config.base import (
    Fraction,
    Frozen,
    StorageOptions,
    max_pixels_field,
    max_tiled_pixels_field,
    storage_options_field,
)

if TYPE_CHECKING:
    from segflow.tasks.ingest.masks import MaskRules
    from segflow.tasks.ingest.pairs import PairLayout
    from segflow.tasks.storage.image_io import SizeLimits


class IngestConfig(Frozen):
    """Settings of the `ingest-dataset` flow."""

    source: str = Field(
        ...,
        description="Folder holding the image and mask sub-folders, or train/, val/ and test/ "
        "folders that each hold them (a sample's folder gives its split).",
    )
    store: str = Field(..., description="Path of the Zarr v3 dataset store to create or update.")
    images_dir: str = Field("images", description="Sub-folder of `source` with the images.")
    masks_dir: str = Field("masks", description="Sub-folder of `source` with the masks.")
    mask_suffix: str = Field(
        "", description="Suffix of mask stems, e.g. '_mask' pairs a.png with a_mask.png."
    )
    num_classes: int = Field(
        2, ge=2, le=255, description="Classes including background (2 = binary)."
    )
    class_names: tuple[str, ...] | None = Field(
        None, description="One name per class; default background, class_1, ..."
    )
    foreground_value: int | None = Field(
        None,
        ge=0,
        description="Binary only: the source mask value that is foreground (e.g. 0 when the "
        "structure of interest is black). Default: 255 for 0/255 masks, 1 for 0/1 masks.",
    )
    invert: bool = Field(False, description="Binary only: swap foreground and background.")
    split_file: str | None = Field(
        None,
        description="JSON ({split: [ids]} or {id: split}) or CSV (id,split rows) file assigning "
        "sample ids to train/val/test; it wins over split folders, and the ids it leaves out "
        "are split by the fractions.",
    )
    val_fraction: Fraction = Field(
        0.15,
        description="Share of samples in the val split; when the source gives train but no "
        "val samples, the share of its train samples drawn into val.",
    )
    test_fraction: Fraction = Field(0.15, description="Share of samples in the test split.")
    seed: int = Field(0, ge=0, description="Seed of the train/val/test split.")
    workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Dask worker processes (default: one per CPU core; this process alone for "
        "a job under 512 MiB decoded, which a cluster would not speed up).",
    )
    dask_address: str | None = Field(
        None, description="Scheduler address of an existing Dask cluster (default: start one)."
    )
    storage_options: StorageOptions = storage_options_field()
    max_pixels: int = max_pixels_field()
    max_tiled_pixels: int = max_tiled_pixels_field()

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but num_classes is "
                f"{self.num_classes}"
            )
        if self.num_classes > 2 and (self.foreground_value is not None or self.invert):
            raise ValueError("foreground_value and invert apply to binary masks (num_classes=2)")
        return self

    @property
    def resolved_class_names(self) -> tuple[str, ...]:
        """Class names, defaulted when not given."""
        if self.class_names is not None:
            return self.class_names
        if self.num_classes == 2:
            return ("background", "foreground")
        return ("background",) + tuple(f"class_{i}" for i in range(1, self.num_classes))

    # The methods below import the stage's modules when called: the CLI imports every config
    # to build its options, and those modules load Dask and Zarr (about 0.4 s).

    def pair_layout(self) -> PairLayout:
        """Where the images and masks sit under `source`."""
        from segflow.tasks.ingest.pairs import PairLayout

        return PairLayout(
            images_dir=self.images_dir, masks_dir=self.masks_dir, mask_suffix=self.mask_suffix
        )

    def mask_rules(self) -> MaskRules:
        """How source mask values become class ids."""
        from segflow.tasks.ingest.masks import MaskRules

        return MaskRules(
            num_classes=self.num_classes,
            foreground_value=self.foreground_value,
            invert=self.invert,
        )

    def size_limits(self) -> SizeLimits:
        """The largest images accepted, checked on their headers before decoding."""
        from segflow.tasks.storage.image_io import SizeLimits

        return SizeLimits(max_pixels=self.max_pixels, max_tiled_pixels=self.max_tiled_pixels)

    def split_fractions(self) -> dict[str, float]:
        """Target share of samples per split: ``train`` gets what val and test leave."""
        return {
            "train": 1.0 - self.val_fraction - self.test_fraction,
            "val": self.val_fraction,
            "test": self.test_fraction,
        }
