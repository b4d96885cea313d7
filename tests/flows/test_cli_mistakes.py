"""A user's mistake ends the command in one line, with its exit status, before Prefect starts,
and nothing is created (issue 18, part 1); `--version`, `--debug` and no telemetry (part 7)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.images import make_source, save

SEGFLOW = Path(sys.executable).with_name("segflow")  # the console script of this environment


def run(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """`segflow args` in `tmp_path` with its own homes and no tracking server; its duration."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "SEGFLOW_")) and k != "DO_NOT_TRACK"
    }
    clean |= {"SEGFLOW_HOME": str(tmp_path / ".segflow"), **env}
    start = time.perf_counter()
    done = subprocess.run(
        [str(SEGFLOW), *args], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120
    )
    return done, time.perf_counter() - start


def assert_one_line(done: subprocess.CompletedProcess, status: int, *words: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert done.returncode == status, done.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def prefect_started(tmp_path: Path) -> bool:
    """Prefect's temporary server creates its database on start."""
    return any((tmp_path / ".segflow").rglob("*.db"))


@pytest.fixture()
def folders(tmp_path: Path) -> Path:
    """A source, an image folder without masks and a plain file; no MLflow database."""
    make_source(tmp_path / "src", n=1)
    save(tmp_path / "only_images" / "images" / "a.png", np.zeros((16, 16), np.uint8))
    (tmp_path / "notes.txt").write_text("not a folder")
    # Split files with a mistake each, and split folders holding one sample id twice (issue 15)
    (tmp_path / "unknown.json").write_text('{"train": ["s00", "b", "a"]}')
    (tmp_path / "twice.csv").write_text("id,split\ns00,train\ns00,test\n")
    (tmp_path / "holdout.json").write_text('{"s00": "holdout"}')
    (tmp_path / "broken.json").write_text('{"train": ["s00"')
    make_source(tmp_path / "dup" / "train", n=1)
    make_source(tmp_path / "dup" / "val", n=1)
    return tmp_path


MISTAKES = [  # arguments, exit status, words of the line, paths that must not exist afterwards
    (["ingest", "missing", "S.zarr"], 2, ["source missing does not exist"], ["S.zarr"]),
    (["ingest", "notes.txt", "S.zarr"], 2, ["notes.txt is a file"], ["S.zarr"]),
    (["ingest", "only_images", "S.zarr"], 2, ["has no masks/ folder"], ["S.zarr"]),
    (["ingest", "src", "notes.txt"], 2, ["store notes.txt is a file"], []),
    (["ingest", "src", "S.zarr", "--split-file", "unknown.json"], 2,
     ["unknown.json: unknown sample ids a, b (not among the image/mask pairs in src)"],
     ["S.zarr"]),
    (["ingest", "src", "S.zarr", "--split-file", "twice.csv"], 2,
     ["twice.csv: line 3: id s00 in both train and test"], ["S.zarr"]),
    (["ingest", "src", "S.zarr", "--split-file", "holdout.json"], 2,
     ["holdout.json: unknown split 'holdout' for id s00 (use train, val, test)"], ["S.zarr"]),
    (["ingest", "src", "S.zarr", "--split-file", "broken.json"], 2,
     ["broken.json: not valid JSON"], ["S.zarr"]),
    (["ingest", "src", "S.zarr", "--split-file", "missing.csv"], 2,
     ["missing.csv: cannot read the split file (No such file or directory)"], ["S.zarr"]),
    (["ingest", "dup", "S.zarr"], 2,
     ["sample id 's00' is in two split folders", "dup/train/images/s00.png and",
      "dup/val/images/s00.png"], ["S.zarr"]),
    (["train", "missing.zarr"], 2, ["store missing.zarr does not exist", "segflow ingest"],
     ["work"]),
    (["train", "only_images"], 2, ["only_images: no Zarr store here"], ["work"]),
    (["infer", "missing", "out.zarr"], 2, ["input missing: no images found"], ["out.zarr"]),
    (["infer", "only_images/images", "out.zarr"], 2,
     ["models:/segflow-unet@newest: no MLflow database", "segflow train STORE"],
     ["out.zarr", "work"]),
    (["infer", "only_images/images", "out.zarr", "--model", "nothing/here"], 2,
     ["neither a models:/ URI nor a bundle folder"], ["out.zarr"]),
    (["infer", "src/images", "notes.txt", "--model", "src"], 2, ["output notes.txt is a file"],
     []),
    (["pipeline", "missing", "w"], 2, ["source missing does not exist"], ["w"]),
    (["evaluate", "missing.zarr", "S.zarr"], 2, ["no prediction store here"], ["work"]),
    (["train", "S.zarr", "--epoch", "1"], 2, ["unrecognized arguments: --epoch 1"], ["work"]),
    (["train", "S.zarr", "--epochs", "0"], 2, ["invalid train options: epochs:"], ["work"]),
    (["infer", "in", "out.zarr", "--split", "all"], 2, ["invalid choice: 'all'"], ["out.zarr"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "status", "words", "absent"), MISTAKES)
def test_a_mistake_ends_in_one_line_before_prefect_and_creates_nothing(
    folders, args, status, words, absent
):
    done, seconds = run(folders, *args)
    assert_one_line(done, status, *words)
    for name in absent:
        assert not (folders / name).exists(), name
    assert not prefect_started(folders)
    assert not (folders / ".segflow").exists()  # Prefect (which makes its home) not imported
    assert seconds < 5


def test_debug_adds_the_traceback(tmp_path):
    for done, _ in (
        run(tmp_path, "--debug", "train", "missing.zarr"),
        run(tmp_path, "train", "missing.zarr", SEGFLOW_DEBUG="1"),
    ):
        assert done.returncode == 2
        assert "Traceback (most recent call last)" in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: store missing.zarr")


@pytest.mark.slow  # creating an MLflow database takes ~10 s
def test_a_model_not_registered_lists_the_registered_ones(folders):
    from mlflow import MlflowClient

    database = folders / "work" / "mlflow.db"
    database.parent.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{database}").create_registered_model("segflow-demo")
    done, _ = run(folders, "infer", "only_images/images", "out.zarr")
    assert_one_line(done, 2, "no registered model segflow-unet", "registered: segflow-demo")
    done, _ = run(folders, "infer", "only_images/images", "out.zarr", "--model", "models:/x/1")
    assert_one_line(done, 2, "no registered model x")
    assert not (folders / "out.zarr").exists()


def test_version(tmp_path):
    from importlib.metadata import version

    done, _ = run(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"segflow {version('segflow')}"


def test_prefect_telemetry_and_its_notice_are_off(tmp_path):
    script = (
        "from segflow.flows.env import use_local_defaults; use_local_defaults();"
        "from prefect._internal.analytics.enabled import is_telemetry_enabled;"
        "print(is_telemetry_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "CI")}
    env |= {"SEGFLOW_HOME": str(tmp_path / ".segflow")}
    env = {k: v for k, v in env.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr


def test_synth_takes_a_non_square_size_and_object_kinds(tmp_path):
    done, _ = run(tmp_path, "synth", "out", "--count", "1", "--size", "24x40", "--objects", "thin")
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(tmp_path / "out" / "masks" / "sample_000.png")).shape == (24, 40)
    done, _ = run(tmp_path, "synth", "bad", "--size", "3x")
    assert_one_line(done, 2, "argument --size: '3x' is not N or HxW")
    assert not (tmp_path / "bad").exists()


def test_a_good_command_in_a_fresh_folder_makes_prefects_home(folders):
    """Prefect's home is made (parents too) only once the checks pass; Prefect itself would
    make only its last folder, and its temporary server then finds no database."""
    done, _ = run(folders, "ingest", "src", "S.zarr")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (folders / ".segflow" / "prefect").is_dir() and (folders / "S.zarr").is_dir()
