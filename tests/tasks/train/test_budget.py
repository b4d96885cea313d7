"""The budget plan: a schedule that fills the budget at the measured speed, patches no larger
than the images, and the settings the user gave kept."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from segflow.flows.config import TrainConfig
from segflow.models.unet import UNetConfig
from segflow.tasks.train import budget as budgeting
from segflow.tasks.train.budget import (
    HEADROOM,
    MAX_PROBE_SHARE,
    MIN_BASE,
    MIN_STEPS,
    PLANNED,
    BudgetPlan,
    BudgetSettings,
    duration,
    plan_schedule,
    size_patches,
)
from segflow.tasks.train.fingerprint import Fingerprint
from segflow.tasks.train.probe import Throughput


def fingerprint(side=512, width=5.0, samples=20):
    return Fingerprint(samples, 1, side, samples * side * side, (0.9, 0.1), width)


def budget(seconds=600.0, given=(), nproc=1, **values):
    settings = {"epochs": 20, "patches_per_epoch": 256, "patch_size": 256, "batch_size": 8}
    settings |= {"base_channels": 32}
    settings |= values
    free = frozenset(PLANNED) - set(given)
    return BudgetSettings(
        seconds, free, **settings, max_epochs=10_000, max_batch=1024, multiple=16, nproc=nproc
    )


def measured(rate=8.8, validation=3.0, checkpoint=0.2, snapshot=1.5, device="cpu bf16", probe=5.0):
    return Throughput(rate, validation, checkpoint, snapshot, probe, device)


def planned(settings, speed, factor=1):
    return plan_schedule(settings, size_patches(fingerprint(), settings), speed, factor)


@pytest.mark.parametrize("seconds", [60, 600, 3600])
@pytest.mark.parametrize("rate", [2.0, 8.8, 300.0])
def test_the_schedule_fills_the_budget(seconds, rate):
    speed = measured(rate=rate)
    plan = planned(budget(seconds), speed)
    overhead = speed.validation_seconds + speed.checkpoint_seconds
    spent = duration(plan.epochs, plan.patches_per_epoch, rate, overhead, speed.snapshot_seconds)
    assert plan.loop_seconds == seconds - speed.seconds  # the probe's time is spent
    target = plan.loop_seconds * (1 + HEADROOM)
    # Whole batches, rounded up: past the target by less than a batch per epoch, never short.
    assert target <= spent <= target + plan.epochs * plan.batch_size / rate
    assert plan.predicted_seconds == pytest.approx(spent)
    assert plan.patches_per_epoch % plan.batch_size == 0
    assert plan.epochs * overhead <= 0.1 * seconds * (1 + HEADROOM)  # validation stays small


@pytest.mark.parametrize("probe", [0.0, 60.0, 250.0, 500.0])
def test_the_probe_comes_out_of_the_budget_and_the_loop_keeps_at_least_half(probe):
    """On a 2-core CPU without bf16 the probe took 61 s of a 600 s budget."""
    plan = planned(budget(600), measured(rate=0.8, probe=probe))
    assert plan.loop_seconds == max(600 - probe, (1 - MAX_PROBE_SHARE) * 600)
    assert plan.predicted_seconds <= plan.loop_seconds * (1 + HEADROOM) + plan.epochs * 8 / 0.8
    loop = TrainConfig(store="s", max_minutes=10).loop(plan=plan.to_dict())
    assert loop.max_seconds == plan.loop_seconds  # the loop's deadline is the plan's
    assert TrainConfig(store="s", max_minutes=10).loop().max_seconds == 600  # no plan: all
    stored = {k: v for k, v in plan.to_dict().items() if k != "loop_seconds"}
    assert BudgetPlan.from_dict(stored).loop_seconds == 600  # a plan stored before this


def test_the_issue_example_sizes_ten_minutes_to_the_measured_speed():
    """20 epochs x 256 patches at 8.8 patches/s ended after ~580 s of a 600 s budget."""
    plan = planned(budget(600), measured(rate=8.8))
    assert plan.epochs * plan.patches_per_epoch > 595 * 8.8 * 0.85  # not the 5120 of before
    assert 0.8 < plan.patches_per_epoch / 256 < 1.25  # epochs of about the configured size


def test_the_balancing_windows_count_as_a_share_of_a_patch():
    """With 128² windows (4 per 256² patch) the probe counts 4 times the patches per second."""
    plain = planned(budget(600), measured(rate=8.8))
    windows = planned(budget(600), measured(rate=4 * 8.8), factor=4)
    assert (windows.epochs, windows.patches_per_epoch) == (plain.epochs, plain.patches_per_epoch)


def test_given_epochs_the_plan_sizes_the_epochs_and_the_other_way_round():
    speed = measured()
    fixed_epochs = planned(budget(600, given=("epochs",), epochs=5), speed)
    assert fixed_epochs.epochs == 5 and fixed_epochs.planned == (
        "patches_per_epoch",
        "patch_size",
        "batch_size",
        "base_channels",
    )
    assert fixed_epochs.predicted_seconds >= fixed_epochs.loop_seconds * (1 + HEADROOM)
    fixed_patches = planned(budget(600, given=("patches_per_epoch",), patches_per_epoch=64), speed)
    assert fixed_patches.patches_per_epoch == 64
    assert fixed_patches.predicted_seconds >= fixed_patches.loop_seconds  # whole epochs past it
    both = planned(budget(600, given=("epochs", "patches_per_epoch"), epochs=3), speed)
    assert (both.epochs, both.patches_per_epoch) == (3, 256)


@pytest.mark.parametrize("side", [20, 64, 100, 250, 300, 5000])
@pytest.mark.parametrize("width", [0.0, 3.0, 40.0, 500.0])
def test_the_patch_never_exceeds_the_image(side, width):
    sizes = size_patches(fingerprint(side=side, width=width), budget())
    assert sizes.patch_size <= max(side, 16) and sizes.patch_size % 16 == 0
    if side >= 256 and width * 4 <= 256:
        assert sizes.patch_size == 256  # the configured side when the image allows it
    if 4 * width <= side - 16:
        assert sizes.patch_size >= 4 * width  # an object with its surroundings


def test_a_smaller_patch_keeps_the_pixels_of_a_step_within_five_percent_of_the_data():
    many = size_patches(fingerprint(side=64, samples=10_000), budget())
    assert (many.patch_size, many.batch_size) == (64, 8 * 16)  # 8 x 256² in pixels
    few = size_patches(fingerprint(side=64, samples=200), budget())
    assert few.batch_size == int(0.05 * 200)  # 5 % of the train pixels
    tiny = size_patches(fingerprint(side=64, samples=3), budget())
    assert tiny.batch_size == 8  # never below the configured batch
    split = size_patches(fingerprint(side=64, samples=10_000), budget(nproc=3, batch_size=9))
    assert split.batch_size % 3 == 0
    larger = size_patches(fingerprint(side=2048, width=128.0), budget())
    assert (larger.patch_size, larger.batch_size) == (512, 2)


def test_given_patch_and_batch_stay():
    sizes = size_patches(
        fingerprint(side=64), budget(given=("patch_size", "batch_size"), patch_size=128)
    )
    assert (sizes.patch_size, sizes.batch_size, sizes.reasons) == (128, 8, ())


def test_several_gpus_train_as_many_times_faster_cpu_ranks_do_not():
    cpu = planned(budget(600, nproc=2), measured(device="cpu bf16"))
    gpu = planned(budget(600, nproc=2), measured(device="cuda bf16"))
    assert gpu.patches_per_second == 2 * cpu.patches_per_second


def test_the_plan_round_trips_and_logs_flat_params():
    plan = planned(budget(600), measured())
    assert BudgetPlan.from_dict(plan.to_dict()) == plan
    params = plan.params()
    assert params["plan.epochs"] == str(plan.epochs) and params["plan.device"] == "cpu bf16"
    assert params["plan.planned"] == "epochs,patches_per_epoch,patch_size,batch_size,base_channels"
    assert "| epochs | " in plan.markdown() and plan.line().startswith("plan: ")


def test_the_config_plans_only_what_the_user_left_free():
    assert TrainConfig(store="s").budget() is None  # no budget: the schedule as configured
    given = dict(epochs=3, patches_per_epoch=64, patch_size=128, batch_size=4)
    assert TrainConfig(store="s", max_minutes=1, **given).budget() is None  # base: not alone
    config = TrainConfig(store="s", max_minutes=2, epochs=5)
    settings = config.budget()
    assert settings.seconds == 120 and settings.free == set(PLANNED) - {"epochs"}
    sized = config.planned({"epochs": 9, "patches_per_epoch": 96, "patch_size": 64})
    assert (sized.epochs, sized.patches_per_epoch, sized.patch_size) == (5, 96, 64)
    assert sized.batch_size == 8 and sized.max_minutes == 2
    assert sized.planned({"patches_per_epoch": 8}).patches_per_epoch == 96  # set from then on


def test_a_planned_batch_is_checked_like_a_given_one():
    with pytest.raises(ValueError, match="nproc"):
        TrainConfig(store="s", max_minutes=1, nproc=2).planned({"batch_size": 9})


@dataclass(frozen=True)
class Members:  # what plan_budget reads of MemberSettings
    unet: UNetConfig


def plan_with_speeds(monkeypatch, settings, speeds: dict[int, float], probe=20.0):
    """plan_budget with a probe that measures `speeds[base channels]` patches/s."""
    probed = []

    def measure(balance, members):
        probed.append(members.unet.base_channels)
        return measured(rate=speeds[members.unet.base_channels], probe=probe)

    monkeypatch.setattr(budgeting, "measure_throughput", measure)
    balance = SimpleNamespace(levers=SimpleNamespace(batch_factor=1))
    members = Members(UNetConfig(in_channels=1, num_classes=1, base_channels=32))
    sizes = size_patches(fingerprint(), settings)
    return budgeting.plan_budget(balance, sizes, settings, members), probed


def test_a_budget_of_few_steps_plans_half_the_base_channels(monkeypatch):
    # ISBI on the AVX2 machine: ~0.9 patches/s of base 32, ~3.3 of base 16
    plan, probed = plan_with_speeds(monkeypatch, budget(600), {32: 0.9, 16: 3.3, 8: 9.0})
    assert probed == [32, 16] and MIN_BASE == 16  # never below MIN_BASE
    assert plan.base_channels == 16 and plan.settings()["base_channels"] == 16
    assert plan.probe_seconds == 40.0 and plan.loop_seconds == 560.0  # both probes are spent
    base32 = planned(budget(600), measured(rate=0.9, probe=20.0))
    assert base32.steps < MIN_STEPS and plan.steps > 3 * base32.steps  # the base-16 schedule
    assert any(r.startswith("U-Net base 16, not 32") for r in plan.reasons)
    assert "U-Net base 16" in plan.line()


def test_a_budget_of_enough_steps_keeps_the_base_and_probes_once(monkeypatch):
    plan, probed = plan_with_speeds(monkeypatch, budget(600), {32: 8.8, 16: 20.0})
    assert probed == [32] and plan.base_channels == 32 and plan.steps >= MIN_STEPS


def test_given_base_channels_are_never_halved(monkeypatch):
    settings = budget(600, given=("base_channels",))
    plan, probed = plan_with_speeds(monkeypatch, settings, {32: 0.9, 16: 3.3})
    assert probed == [32] and plan.base_channels == 32 and plan.steps < MIN_STEPS


def test_a_plan_stored_before_base_channels_were_planned_leaves_them_as_configured():
    stored = planned(budget(600), measured()).to_dict()
    del stored["base_channels"]
    plan = BudgetPlan.from_dict(stored)
    assert "base_channels" not in plan.settings() and "plan.base_channels" not in plan.params()
    assert "| base_channels |" not in plan.markdown()
    config = TrainConfig(store="s", max_minutes=10).planned(plan.settings())
    assert config.base_channels == TrainConfig(store="s").base_channels


def test_a_given_schedule_keeps_the_base(monkeypatch):
    settings = budget(600, given=("epochs", "patches_per_epoch"), epochs=3, patches_per_epoch=64)
    plan, probed = plan_with_speeds(monkeypatch, settings, {32: 0.9, 16: 3.3})
    assert probed == [32] and plan.base_channels == 32 and plan.steps == 3 * 64 // 8


def test_a_smaller_base_no_faster_here_is_not_kept_and_its_probe_is_spent(monkeypatch):
    plan, probed = plan_with_speeds(monkeypatch, budget(600), {32: 0.9, 16: 0.9})
    assert probed == [32, 16] and plan.base_channels == 32
    assert plan.probe_seconds == 40.0 and plan.patches_per_second == 0.9
    assert not any(r.startswith("U-Net base") for r in plan.reasons)


def test_no_second_probe_once_probing_took_a_quarter_of_the_budget(monkeypatch):
    plan, probed = plan_with_speeds(monkeypatch, budget(600), {32: 0.9, 16: 3.3}, probe=150.0)
    assert probed == [32] and plan.base_channels == 32
