"""The built wheel installs one top-level package, ``segflow``, holding every source module."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("flows", "tasks", "models", "deployments")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("segflow-*.whl")
    return path


def test_wheel_holds_one_top_level_package_with_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"segflow"}
    sources = {
        f"segflow/{path.relative_to(ROOT).as_posix()}"
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*.py")
    }
    assert sources <= set(names), sorted(sources - set(names))
    assert "segflow/deployments/prefect.yaml" in names


def test_installed_wheel_imports_as_segflow_only(wheel, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import importlib.util as u, segflow.models, segflow.tasks.storage;"
        "print(u.find_spec('models'), u.find_spec('tasks'), u.find_spec('flows'),"
        " u.find_spec('deployments'), segflow.models.__file__)"
    )
    out = subprocess.run(
        [python, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.split()
    assert out[:4] == ["None"] * 4
    assert out[4].startswith(str(env))


def test_every_package_folder_is_listed_in_pyproject():
    """setuptools would still ship an unlisted folder, as data and with a warning: list it."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        "segflow." + init.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert listed == folders
