"""Settings of the ``train-unet`` flow."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from annotated_types import Le
from pydantic import Field, model_validator

from segflow.flows.config.base import Frozen, StorageOptions, storage_options_field

if TYPE_CHECKING:
    from segflow.models.unet import UNetConfig
    from segflow.tasks.train.budget import BudgetSettings
    from segflow.tasks.train.ensemble import MemberSettings
    from segflow.tasks.train.loop import LoopSettings
    from segflow.tasks.train.sampling import SamplingSettings
    from segflow.tasks.train.training_run import RunSettings


class TrainConfig(Frozen):
    """Settings of the `train-unet` flow (balance step + training + model registration)."""

    store: str = Field(..., description="Dataset store written by `segflow ingest`.")
    workdir: str = Field("work", description="Checkpoints, MLflow database and artifacts go here.")
    storage_options: StorageOptions = storage_options_field()
    run_name: str = Field(
        "unet", pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the run (checkpoint folder)."
    )
    experiment: str = Field("segflow", description="MLflow experiment.")
    registered_model: str | None = Field(
        "segflow-unet", description="Register the model under this name (None: do not)."
    )
    alias_unlearned: bool = Field(
        False,
        description="Give the `newest` alias even to a model that did not beat the trivial "
        "baselines (all background, all foreground) on validation.",
    )
    # model
    base_channels: int = Field(
        32,
        ge=1,
        le=256,
        description="Channels of the first level (with --max-minutes, halved where the budget "
        "allows too few steps, unless given).",
    )
    depth: int = Field(4, ge=1, le=6, description="Number of 2x2 poolings (paper: 4).")
    batch_norm: bool = Field(True, description="Batch normalisation after each convolution.")
    # balancing
    balance: bool = Field(True, description="Foreground oversampling and per-sample weights.")
    fg_oversample: float = Field(
        0.33, ge=0.0, le=1.0, description="Share of patches centred on a foreground pixel."
    )
    target_share: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Foreground share per class the balancing plan aims at: more centred draws, "
        "smaller windows, then loss weights (0: sampling exactly as set).",
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
    loss: Literal["auto", "bce", "dice", "jaccard", "bce_dice", "ce", "ce_dice"] = Field(
        "auto",
        description="Loss: bce|dice|jaccard|bce_dice (binary), ce|dice|ce_dice (several "
        "classes); auto = bce_dice for a binary model, ce_dice for several classes.",
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
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Time budget of each member's training, in minutes. The epochs, patches per "
        "epoch, patch size and batch not given are then planned to fill it, from the data and a "
        "short speed probe on the device, whose time comes out of the budget.",
    )
    weights: Literal["auto", "best", "last", "ema"] = Field(
        "auto",
        description="Weights to register: best val Dice, the last epoch's, their exponential "
        "moving average (ema), or auto = last when the schedule ran its course (epochs or time "
        "budget), best after early stopping.",
    )
    resume: bool = Field(False, description="Continue the run's last checkpoint.")
    nproc: int = Field(
        1,
        ge=1,
        le=1024,
        description="Data-parallel training processes on this machine (one per GPU on CUDA); "
        "each takes batch_size / nproc patches of every step. Under torchrun: its world size.",
    )
    seed: int = Field(0, ge=0, description="Seed of the sampling plan, init and data order.")

    @model_validator(mode="after")
    def _check_loss(self) -> TrainConfig:
        if self.ensemble_mode == "folds" and self.ensemble < 2:
            raise ValueError("ensemble_mode='folds' needs ensemble >= 2")
        return self

    @model_validator(mode="after")
    def _check_nproc(self) -> TrainConfig:
        if self.batch_size % self.nproc:
            raise ValueError(
                f"batch_size {self.batch_size} does not split over nproc {self.nproc} "
                f"processes: use a multiple of {self.nproc}"
            )
        return self

    # The methods below import the stage's modules when called: the CLI imports every config
    # to build its options, and those modules load torch (about 1.5 s).

    def sampling(self) -> SamplingSettings:
        """How the balance step builds the sampling plan."""
        from segflow.tasks.train.sampling import SamplingSettings

        return SamplingSettings(
            patch_size=self.patch_size,
            fg_oversample=self.fg_oversample,
            balance=self.balance,
            class_weights=self.class_weights,
            weight_cap=self.weight_cap,
            target_class=self.target_class,
            seed=self.seed,
            target_share=self.target_share,
            window_multiple=2**self.depth,
        )

    def training_run(self) -> RunSettings:
        """Where the MLflow run and the checkpoints go; the whole config is its params."""
        from segflow.tasks.train.training_run import RunSettings

        return RunSettings(
            workdir=Path(self.workdir),
            experiment=self.experiment,
            run_name=self.run_name,
            resume=self.resume,
            params=self.model_dump(),
        )

    def unet(self, in_channels: int, num_classes: int) -> UNetConfig:
        """The U-Net for images of `in_channels` channels and `num_classes` logits (the
        balance step knows both)."""
        from segflow.models.unet import UNetConfig

        return UNetConfig(
            in_channels=in_channels,
            num_classes=num_classes,
            depth=self.depth,
            base_channels=self.base_channels,
            batch_norm=self.batch_norm,
        )

    def loop(self, batch_factor: int = 1, plan: Mapping[str, Any] | None = None) -> LoopSettings:
        """How the training loop runs, validates and stops; `batch_factor` times the batch
        (the balancing plan's smaller windows); the budget `plan`'s measured validation time
        is reserved from the first epoch on."""
        from segflow.tasks.train.loop import LoopSettings

        return LoopSettings(
            epochs=self.epochs,
            batch_size=self.batch_size * batch_factor,
            lr=self.lr,
            weight_decay=self.weight_decay,
            device=self.device,
            precision=self.precision,
            channels_last=self.channels_last,
            num_workers=self.num_workers,
            val_max_tiles=self.val_max_tiles,
            val_tile=self.patch_size,
            patience=self.patience,
            max_seconds=self._loop_seconds(plan),
            resume=self.resume,
            nproc=self.nproc,
            epoch_overhead=0.0 if plan is None else plan["epoch_overhead"],
        )

    def _loop_seconds(self, plan: Mapping[str, Any] | None) -> float | None:
        """The training loop's time budget: the plan's (the budget less its probe), else
        `max_minutes`."""
        if plan is not None:
            return plan.get("loop_seconds", plan["seconds"])
        return None if self.max_minutes is None else self.max_minutes * 60

    def budget(self) -> BudgetSettings | None:
        """What the budget plan fills and starts from: None without `max_minutes`, or when
        the epochs, patches per epoch, patch size, batch and base channels were all given
        (the fields set explicitly, ``model_fields_set``, are never planned)."""
        from segflow.tasks.train.budget import PLANNED, BudgetSettings

        free = frozenset(PLANNED) - self.model_fields_set
        if self.max_minutes is None or not free - {"base_channels"}:
            return None  # base channels are planned only with the schedule
        return BudgetSettings(
            seconds=self.max_minutes * 60,
            free=free,
            epochs=self.epochs,
            patches_per_epoch=self.patches_per_epoch,
            patch_size=self.patch_size,
            batch_size=self.batch_size,
            base_channels=self.base_channels,
            max_epochs=self._most("epochs"),
            max_batch=self._most("batch_size"),
            multiple=2**self.depth,
            nproc=self.nproc,
        )

    @classmethod
    def _most(cls, name: str) -> int:
        """The upper bound (``le``) of field `name`."""
        return next(b.le for b in cls.model_fields[name].metadata if isinstance(b, Le))

    def with_loss_for(self, out_channels: int) -> TrainConfig:
        """This config with ``loss="auto"`` resolved for a model of `out_channels` logits."""
        from segflow.models.losses import default_loss

        loss = default_loss(self.loss, out_channels)
        if loss == self.loss:
            return self
        return type(self).model_validate({**self.model_dump(exclude_unset=True), "loss": loss})

    def planned(self, settings: Mapping[str, Any]) -> TrainConfig:
        """This config with the planned `settings` the user did not give (validated; they
        count as set from then on)."""
        update = {k: v for k, v in settings.items() if k not in self.model_fields_set}
        return type(self).model_validate({**self.model_dump(exclude_unset=True), **update})

    def members(
        self, unet: UNetConfig, batch_factor: int = 1, plan: Mapping[str, Any] | None = None
    ) -> MemberSettings:
        """How each ensemble member of architecture `unet` is trained; its checkpoints save
        this config with the U-Net's (and the budget `plan`, when there is one). The
        balancing plan's smaller windows come with `batch_factor` times the batch and the
        patches per epoch (the same pixels)."""
        from segflow.tasks.train.augment import Augmentation
        from segflow.tasks.train.ensemble import MemberSettings

        return MemberSettings(
            unet=unet,
            loop=self.loop(batch_factor, plan),
            members=self.ensemble,
            folds=self.ensemble_mode == "folds",
            loss=self.loss,
            patches_per_epoch=self.patches_per_epoch * batch_factor,
            augmentation=Augmentation(elastic=self.elastic),
            weights=self.weights,
            seed=self.seed,
            config={**self.model_dump(), "unet": unet.to_dict()}
            | ({} if plan is None else {"plan": dict(plan)}),
        )
