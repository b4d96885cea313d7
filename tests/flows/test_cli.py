"""The ``segflow`` command: ``serve`` arrives through an entry point, and the flows never import
the deployments (imports run deployments -> flows)."""

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from segflow.deployments import serve
from segflow.flows.cli import COMMANDS_GROUP, build_parser

SEGFLOW = Path(sys.executable).with_name("segflow")  # the console script of this environment

IMPORT_EVERY_FLOWS_MODULE = """
import pkgutil, importlib, sys
import segflow.flows
for module in pkgutil.walk_packages(segflow.flows.__path__, "segflow.flows."):
    importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name.startswith("segflow.deployments")))
"""


def segflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SEGFLOW), *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_importing_every_flows_module_imports_no_deployment():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_FLOWS_MODULE],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_serve_comes_from_the_entry_point_group():
    (entry,) = entry_points(group=COMMANDS_GROUP, name="serve")
    assert entry.value == "segflow.deployments.serve:add_command"
    ns = build_parser().parse_args(["serve", "--schedules", "--only", "ingest-dataset"])
    assert ns.run is serve.run
    assert (ns.schedules, ns.only, ns.data_root) == (True, ["ingest-dataset"], None)


def test_console_script_lists_serve_and_its_options():
    done = segflow("--help")
    assert done.returncode == 0, done.stderr
    for name in ("synth", "ingest", "train", "infer", "evaluate", "pipeline", "demo", "serve"):
        assert f"\n    {name} " in done.stdout, name
    done = segflow("serve", "--help")
    assert done.returncode == 0, done.stderr
    assert "--data-root" in done.stdout and "--schedules" in done.stdout
    assert "ingest-dataset/bulk-ingest" in done.stdout  # --only's choices, from the table


def test_serve_refuses_without_a_prefect_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = segflow("serve", "--data-root", str(tmp_path), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "set PREFECT_API_URL" in done.stderr
