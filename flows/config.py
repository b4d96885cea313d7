"""Frozen, typed configuration shared by the CLI, the flows and the deployments.

Each flow takes one of these models as its only parameter, so the Prefect UI renders a form with
the descriptions and bounds below, and bad values fail before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestConfig(_Frozen):
    """Settings of the `ingest-dataset` flow."""

    source: str = Field(..., description="Folder holding the image and mask sub-folders.")
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
    val_fraction: Fraction = Field(0.15, description="Share of samples in the val split.")
    test_fraction: Fraction = Field(0.15, description="Share of samples in the test split.")
    seed: int = Field(0, ge=0, description="Seed of the train/val/test split.")
    workers: int | None = Field(
        None, ge=1, le=1024, description="Dask worker processes (default: one per CPU core)."
    )
    dask_address: str | None = Field(
        None, description="Scheduler address of an existing Dask cluster (default: start one)."
    )
    max_pixels: int = Field(
        2**34,
        ge=1,
        description="Reject images with more pixels than this (decompression-bomb guard).",
    )

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


class TrainConfig(_Frozen):
    """Settings of the `train-unet` flow (balance step + training + model registration)."""

    store: str = Field(..., description="Dataset store written by `segflow ingest`.")
    workdir: str = Field("work", description="Checkpoints, MLflow database and artifacts go here.")
    run_name: str = Field(
        "unet", pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the run (checkpoint folder)."
    )
    experiment: str = Field("segflow", description="MLflow experiment.")
    registered_model: str | None = Field(
        "segflow-unet", description="Register the model under this name (None: do not)."
    )
    # model
    base_channels: int = Field(32, ge=1, le=256, description="Channels of the first level.")
    depth: int = Field(4, ge=1, le=6, description="Number of 2x2 poolings (paper: 4).")
    batch_norm: bool = Field(True, description="Batch normalisation after each convolution.")
    # balancing
    balance: bool = Field(True, description="Foreground oversampling and per-sample weights.")
    fg_oversample: float = Field(
        0.33, ge=0.0, le=1.0, description="Share of patches centred on a foreground pixel."
    )
    class_weights: bool = Field(False, description="Weight the loss by inverse class frequency.")
    weight_cap: float = Field(10.0, gt=1.0, description="Upper bound of a class weight.")
    target_class: int | None = Field(
        None, ge=1, description="Train a dedicated binary model for this class of the store."
    )
    # ensembling
    ensemble: int = Field(1, ge=1, le=16, description="Members trained and averaged.")
    ensemble_mode: Literal["seeds", "folds"] = Field(
        "seeds", description="Members differ by seed, or each leaves out one fold of train."
    )
    # training
    epochs: int = Field(20, ge=1, le=10_000, description="Epochs (each `patches_per_epoch`).")
    patches_per_epoch: int = Field(256, ge=1, description="Patches drawn per epoch.")
    patch_size: int = Field(256, ge=16, le=4096, description="Side of the square patches.")
    batch_size: int = Field(8, ge=1, le=1024, description="Patches per optimizer step.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay.")
    loss: Literal["bce", "dice", "jaccard", "bce_dice", "ce", "ce_dice"] = Field(
        "bce_dice", description="Loss: bce|dice|jaccard|bce_dice (binary), ce|dice|ce_dice."
    )
    elastic: bool = Field(False, description="Elastic deformation augmentation (slow on CPU).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast dtype; auto = bf16 where fast (CUDA, AMX CPUs), else fp32."
    )
    channels_last: bool = Field(True, description="channels_last memory format.")
    num_workers: int = Field(1, ge=0, le=64, description="DataLoader worker processes.")
    val_max_tiles: int = Field(64, ge=1, description="Validation tiles per epoch at most.")
    patience: int = Field(
        10, ge=0, description="Stop after N epochs without a better val Dice (0: never)."
    )
    max_minutes: float | None = Field(None, gt=0, description="Stop training after N minutes.")
    weights: Literal["auto", "best", "last"] = Field(
        "auto",
        description="Weights to register: best val Dice, the last epoch's, or auto = last when "
        "the schedule ran its course (epochs or time budget), best after early stopping.",
    )
    resume: bool = Field(False, description="Continue the run's last checkpoint.")
    seed: int = Field(0, ge=0, description="Seed of the sampling plan, init and data order.")

    @model_validator(mode="after")
    def _check_loss(self) -> TrainConfig:
        if self.ensemble_mode == "folds" and self.ensemble < 2:
            raise ValueError("ensemble_mode='folds' needs ensemble >= 2")
        return self


class InferConfig(_Frozen):
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
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Binary mask threshold.")
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


class EvaluateConfig(_Frozen):
    """Settings of the `evaluate-predictions` flow."""

    predictions: str = Field(..., description="Prediction store written by `segflow infer`.")
    store: str = Field(..., description="Dataset store holding the true masks.")
    split: Literal["train", "val", "test"] | None = Field(
        "test", description="Evaluate the samples of this split (None: all samples)."
    )
    workdir: str = Field("work", description="Holds the default MLflow database.")
    experiment: str = Field(
        "segflow", description="MLflow experiment, when the model has no training run."
    )
    promote: bool = Field(
        False, description="Move the champion alias here if the test Dice beats its holder."
    )
    champion_alias: str = Field(
        "champion", pattern=r"^[A-Za-z0-9_-]+$", description="Alias promotion moves."
    )
    overlays: int = Field(2, ge=0, le=16, description="Best and worst images logged as overlays.")
    workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Dask workers (default: in-process up to 2^28 pixels, else one per core).",
    )
    dask_address: str | None = Field(None, description="Use this Dask scheduler instead.")


def _stage(model: type[_Frozen], paths: tuple[str, ...], **defaults: Any) -> type[_Frozen]:
    """`model`'s settings without the fields the pipeline fills in (`paths`), optionally with
    other `defaults`. Cross-field checks run when the pipeline builds the stage's config."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in paths:
            continue
        if name in defaults:
            info = FieldInfo.merge_field_infos(info, default=defaults[name])
        fields[name] = (info.annotation, info)
    return create_model(
        f"{model.__name__.removesuffix('Config')}Stage",
        __base__=_Frozen,
        __doc__=f"{model.__doc__} Paths are set by the pipeline.",
        **fields,
    )


IngestStage = _stage(IngestConfig, ("source", "store"))
TrainStage = _stage(TrainConfig, ("store", "workdir", "resume"))
InferStage = _stage(InferConfig, ("input", "output", "model", "workdir"), split="test")
EvaluateStage = _stage(EvaluateConfig, ("predictions", "store", "workdir", "experiment"))


class PipelineConfig(_Frozen):
    """Settings of the `segflow-pipeline` flow: ingest -> train -> infer -> evaluate.

    Everything lands in `workdir`: ``dataset.zarr``, the MLflow database and checkpoints,
    ``predictions/<model>-<version>-<run>.zarr`` and ``pipeline.json`` (what ran, for
    skipping it next time).
    """

    source: str = Field(..., description="Folder holding the image and mask sub-folders.")
    workdir: str = Field(..., description="Where the store, runs and predictions go.")
    ingest: IngestStage = Field(default_factory=IngestStage, description="Ingest settings.")
    train: TrainStage = Field(default_factory=TrainStage, description="Training settings.")
    infer: InferStage = Field(default_factory=InferStage, description="Inference settings.")
    evaluate: EvaluateStage = Field(
        default_factory=EvaluateStage, description="Evaluation settings."
    )

    @property
    def store(self) -> str:
        return str(Path(self.workdir) / "dataset.zarr")

    def ingest_config(self) -> IngestConfig:
        return IngestConfig(source=self.source, store=self.store, **self.ingest.model_dump())

    def train_config(self, *, resume: bool = False) -> TrainConfig:
        return TrainConfig(
            store=self.store, workdir=self.workdir, resume=resume, **self.train.model_dump()
        )

    def infer_config(self, model: str, run_id: str) -> InferConfig:
        """Predictions of each model go to their own store (a store holds one model's),
        named by the model and its training run (version numbers restart with a new
        tracking database)."""
        name = model.removeprefix("models:/").removeprefix("runs:/").replace("/", "-")
        output = Path(self.workdir) / "predictions" / f"{name}-{run_id[:8]}.zarr"
        return InferConfig(
            input=self.store,
            output=str(output),
            model=model,
            workdir=self.workdir,
            **self.infer.model_dump(),
        )

    def evaluate_config(self, predictions: str) -> EvaluateConfig:
        return EvaluateConfig(
            predictions=predictions,
            store=self.store,
            workdir=self.workdir,
            experiment=self.train.experiment,
            **self.evaluate.model_dump(),
        )

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        # Build every stage's config now, so a bad combination fails before any work.
        self.ingest_config()
        self.train_config()
        self.evaluate_config(self.infer_config("models:/check/1", "0" * 32).output)
        return self
