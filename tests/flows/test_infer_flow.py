import pickle
import warnings

import numpy as np
import pytest
import zarr

from segflow.flows.cli import main
from segflow.flows.config import InferConfig
from segflow.flows.infer import infer_images
from segflow.tasks.infer.blocks import BlockSettings
from segflow.tasks.infer.tiling import Tiling
from tests.images import save, tiny_bundle


@pytest.fixture
def bundle(tmp_path):
    return tiny_bundle(tmp_path / "bundle", seed=1, head_scale=20.0)


def test_bulk_folder_with_a_corrupt_image(tmp_path, bundle):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    for name in ("a", "b"):
        save(folder / f"{name}.png", rng.integers(0, 255, (90, 130), dtype=np.uint8))
    good = (folder / "a.png").read_bytes()
    (folder / "c.png").write_bytes(good[: len(good) // 2])  # header fine, data truncated
    config = InferConfig(
        input=str(folder),
        output=str(tmp_path / "out.zarr"),
        model=str(bundle),
        tile=64,
        margin=8,
        block=256,
        workers=1,
        instances=True,
        min_object_size=5,
    )
    summary = infer_images(config)
    assert summary.images == 3 and list(summary.failed) == ["c"]
    assert set(summary.objects) == {"a", "b"}
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    instances = out["a/labels/instances/0"][0]
    assert instances.max() == summary.objects["a"]
    assert out["a/labels"].attrs["ome"]["labels"] == ["instances", "mask"]
    with warnings.catch_warnings():  # the flow's store holds nothing but Zarr (lock included)
        warnings.simplefilter("error")
        dict(out.members(max_depth=None))

    again = infer_images(config)
    assert again.blocks_predicted == 0 and again.blocks_already_done == 2
    assert list(again.failed) == ["c"]


def test_cli_infer_exit_code_and_bad_config(tmp_path, bundle):
    save(tmp_path / "x.tif", np.zeros((40, 50), np.uint8))
    assert (
        main(
            [
                "infer",
                str(tmp_path / "x.tif"),
                str(tmp_path / "o.zarr"),
                "--model",
                str(bundle),
                "--tile",
                "32",
                "--margin",
                "4",
                "--block",
                "256",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert zarr.open_group(tmp_path / "o.zarr")["x/0"].shape == (1, 40, 50)
    assert (
        main(
            [
                "infer",
                str(tmp_path / "x.tif"),
                str(tmp_path / "o2.zarr"),
                "--tile",
                "384",
                "--block",
                "1024",
            ]
        )
        == 2
    )


def test_block_settings_are_built_from_the_config_alone():
    config = InferConfig(
        input="in",
        output="out.zarr",
        tile=256,
        blend="gaussian",
        margin=16,
        overlap=0.5,
        batch=2,
        tta=True,
        threshold=0.3,
        probability_dtype="float16",
        block=512,
        workers=3,
        torch_threads=5,
        device="cpu",
        precision="bf16",
    )
    parallelism = config.parallelism()
    assert (parallelism.workers, parallelism.batch, parallelism.torch_threads) == (3, 2, 5)
    settings = config.block_settings("bundle", parallelism)
    assert settings == BlockSettings(
        bundle="bundle",
        tiling=Tiling(tile=256, blend="gaussian", margin=16, overlap=0.5),
        batch=2,
        tta=True,
        threshold=0.3,
        precision="bf16",
        device="cpu",
        channels_last=True,
        probability_dtype="float16",
        block=512,
        torch_threads=5,
    )
    assert pickle.loads(pickle.dumps(settings)) == settings  # shipped to every Dask worker


def test_cli_infer_refuses_names_that_clash_in_the_store(tmp_path, bundle, capsys):
    """`model.png` used to crash on the store's model bundle (KeyError: 'model/0'); a.png with
    a.tif wrote one prediction twice. Now each is listed as rejected and the rest predicted."""
    grey = np.zeros((40, 50), np.uint8)
    for name in ("model.png", "a.png", "a.tif", "b.png"):
        save(tmp_path / "in" / name, grey)
    out = tmp_path / "o.zarr"
    options = ["--model", str(bundle), "--tile", "32", "--margin", "4", "--block", "256"]
    assert main(["infer", str(tmp_path / "in"), str(out), *options, "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert f"rejected {tmp_path / 'in' / 'model.png'}: name 'model' is reserved" in text
    assert f"rejected {tmp_path / 'in' / 'a.png'}: duplicate name 'a'" in text
    root = zarr.open_group(out, mode="r")
    assert sorted(root.group_keys()) == ["b", "model"]


def test_resuming_from_other_pixels_is_refused_in_one_line(tmp_path, bundle, capsys):
    rng = np.random.default_rng(0)
    image = save(tmp_path / "in" / "x.png", rng.integers(0, 255, (40, 50), dtype=np.uint8))
    out = tmp_path / "o.zarr"
    command = ["infer", str(tmp_path / "in"), str(out), "--model", str(bundle), "--tile", "32"]
    command += ["--margin", "4", "--block", "256", "--workers", "1"]
    assert main(command) == 0
    before = zarr.open_group(out, mode="r")["x/0"][...]
    save(image, rng.integers(0, 255, (40, 50), dtype=np.uint8))  # same name, other pixels
    capsys.readouterr()
    assert main(command) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "o.zarr/x: predicted from" in errors[0]
    assert "would mix" in errors[0]
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["x/0"][...], before)
