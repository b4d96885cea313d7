import pytest

from segflow.flows.config import TrainConfig
from segflow.tasks.train.balance import balance_classes
from segflow.tasks.train.levers import MAX_OVERSAMPLE, Shares, choose_levers, windows
from tests.images import make_store


def measured(table):
    """``measure(window)`` from window -> (uniform, centred) foreground share, recording calls."""
    calls = []

    def measure(window):
        calls.append(window)
        uniform, centred = table[window]
        return Shares((1 - uniform, uniform), (1 - centred, centred))

    return measure, calls


def plan(table, natural=0.01, target=0.1, fg_oversample=0.33, cap=10.0):
    measure, calls = measured(table)
    levers = choose_levers(
        measure,
        (1 - natural, natural),
        (1,),
        target=target,
        patch_size=256,
        multiple=16,
        fg_oversample=fg_oversample,
        weight_cap=cap,
    )
    return levers, calls


def test_windows_halve_down_to_the_minimum_in_multiples_of_the_network():
    assert windows(256, 16) == [256, 128]
    assert windows(512, 16) == [512, 256, 128]
    assert windows(256, 256) == [256]  # 128 is no multiple of a depth-8 network's 256


def test_no_lever_when_the_data_already_meets_the_target():
    levers, _ = plan({256: (0.2, 0.4)}, natural=0.2)
    assert levers.levers == () and levers.fg_oversample == 0.33 and levers.window == 256
    assert levers.achieved[1] == pytest.approx(0.67 * 0.2 + 0.33 * 0.4)
    assert "already" in levers.reasons[0]


def test_target_zero_keeps_sampling_as_set():
    levers, _ = plan({256: (0.01, 0.05)}, target=0.0)
    assert levers.levers == () and levers.loss_weights is None and levers.batch_factor == 1


def test_centred_draws_are_raised_just_enough():
    levers, calls = plan({256: (0.02, 0.2)})
    assert calls == [256]  # met at the configured window: smaller ones are not probed
    assert levers.levers == ("oversample",)
    assert levers.fg_oversample == pytest.approx((0.1 - 0.02) / (0.2 - 0.02))
    assert levers.achieved[1] == pytest.approx(0.1)
    assert levers.loss_weights is None


def test_a_smaller_window_when_centring_cannot_reach_the_target():
    levers, calls = plan({256: (0.01, 0.03), 128: (0.01, 0.16)})
    assert calls == [256, 128]
    assert levers.window == 128 and levers.batch_factor == 4
    assert "window" in levers.levers and levers.loss_weights is None
    assert levers.achieved[1] >= 0.1 - 1e-9


def test_loss_weights_make_up_what_sampling_cannot():
    levers, _ = plan({256: (0.01, 0.02), 128: (0.01, 0.04)})
    assert levers.fg_oversample == MAX_OVERSAMPLE and levers.window == 128
    achieved = 0.33 * 0.01 + 0.67 * 0.04
    assert levers.achieved[1] == pytest.approx(achieved, rel=1e-2)
    odds = (0.1 / 0.9) / (levers.achieved[1] / (1 - levers.achieved[1]))
    assert levers.loss_weights == pytest.approx((1.0, odds))
    assert levers.levers == ("oversample", "window", "loss weights")
    assert plan({256: (0.001, 0.002), 128: (0.001, 0.003)}, cap=5.0)[0].loss_weights[1] == 5.0


def test_the_plan_is_logged_as_params_and_markdown():
    levers, _ = plan({256: (0.01, 0.02), 128: (0.01, 0.04)})
    params = levers.params()
    assert params["balance.levers"] == "oversample,window,loss weights"
    assert params["balance.window"] == "128" and params["balance.target"] == "0.1000"
    table = levers.markdown(["background", "lesion"])
    assert "| lesion | 1.00% |" in table and "Levers: oversample, window, loss weights." in table
    assert levers.line().startswith("balancing: target 10.0%, rarest class 1.00%")


@pytest.fixture(scope="module")
def thin_store(tmp_path_factory):
    """Thin curves at 1.5 % foreground in 256² images: a 256² patch is the whole image."""
    return make_store(
        tmp_path_factory.mktemp("thin"), count=8, size=256, fg_fraction=0.015, objects="thin"
    )


def test_balance_step_shrinks_windows_where_a_patch_is_the_whole_image(thin_store):
    config = TrainConfig(store=str(thin_store))
    balance = balance_classes(str(thin_store), config.sampling())
    assert balance.plan.patch_size == 128 and balance.levers.batch_factor == 4
    assert balance.fractions_after[1] > 1.25 * balance.fractions_before[1]
    assert balance.plan.class_weights is not None and balance.plan.class_weights[1] > 1
    settings = config.members(config.unet(1, 1), balance.levers.batch_factor)
    assert settings.loop.batch_size == 32 and settings.patches_per_epoch == 1024
    assert settings.loop.val_tile == 256  # validation keeps the configured tiles


def test_balance_step_without_target_or_balance_changes_nothing(thin_store):
    for config in (
        TrainConfig(store=str(thin_store), target_share=0),
        TrainConfig(store=str(thin_store), balance=False),
    ):
        balance = balance_classes(str(thin_store), config.sampling())
        assert balance.plan.patch_size == 256 and balance.levers.levers == ()
        assert balance.plan.class_weights is None


def test_asked_class_weights_win_over_the_plans(thin_store):
    config = TrainConfig(store=str(thin_store), class_weights=True)
    balance = balance_classes(str(thin_store), config.sampling())
    assert balance.plan.class_weights[1] == 10.0  # inverse frequency, capped
    assert balance.levers.loss_weights is None and "as asked" in balance.levers.reasons[-1]
