"""The deployment table, the deployments built from it, prefect.yaml and ``segflow serve``."""

import inspect
import typing
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings

from segflow.deployments.serve import build_deployments, main
from segflow.deployments.specs import SPECS
from segflow.flows.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def config_model(flow) -> type:
    """The pydantic model of a flow's one ``config`` parameter, from its signature."""
    return typing.get_type_hints(flow.fn)["config"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.full_name)
def test_entrypoint_resolves_to_the_named_flow(spec, monkeypatch):
    monkeypatch.chdir(ROOT)  # prefect deploy resolves entrypoints from the repository root
    flow = load_flow_from_entrypoint(spec.entrypoint)
    assert flow.name == spec.flow_name
    imported = spec.load_flow()  # what `segflow serve` uses: the same file, imported as a module
    assert imported.name == spec.flow_name
    assert Path(inspect.getsourcefile(imported.fn)) == ROOT / spec.entrypoint.split(":")[0]


def test_deployments_build_with_valid_parameters_under_the_data_root(tmp_path):
    deployments = build_deployments(tmp_path, schedules=False)
    assert [f"{d.flow_name}/{d.name}" for d in deployments] == [s.full_name for s in SPECS]
    for spec, deployment in zip(SPECS, deployments, strict=True):
        assert deployment.description == spec.description
        assert deployment.tags == list(spec.tags)
        config = config_model(spec.load_flow()).model_validate(deployment.parameters["config"])
        paths = [v for k, v in config.model_dump().items() if k in ("source", "store", "input")]
        assert paths and all(Path(p).is_relative_to(tmp_path) for p in paths)
        schedules = deployment.schedules or []
        assert [s.schedule.cron for s in schedules] == ([spec.cron] if spec.cron else [])
        assert not any(s.active for s in schedules)


def test_schedules_flag_activates_them_and_only_selects():
    deployments = build_deployments("data", schedules=True, only=["infer-images"])
    assert [d.name for d in deployments] == ["nightly-folder"]
    assert deployments[0].schedules[0].active
    assert deployments[0].parameters["config"]["input"] == str(Path("data/incoming").resolve())
    with pytest.raises(ValueError, match="unknown deployments"):
        build_deployments("data", schedules=False, only=["infer-images/nope"])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.full_name)
def test_parameter_schema_has_descriptions_and_bounds(spec):
    (deployment,) = build_deployments("data", schedules=False, only=[spec.full_name])
    schema = deployment._parameter_openapi_schema.model_dump()
    model = config_model(spec.load_flow())
    assert schema["properties"]["config"]["$ref"] == f"#/definitions/{model.__name__}"
    properties = schema["definitions"][model.__name__]["properties"]
    assert set(properties) == set(model.model_fields)
    for name, field in model.model_fields.items():
        assert properties[name]["description"] == field.description
    # The bounds pydantic declares reach the form (Optional fields nest them under anyOf;
    # the pipeline's stage sections are definitions of their own).
    pydantic_schema = model.model_json_schema()
    expected = {model.__name__: pydantic_schema} | pydantic_schema.get("$defs", {})
    bounded = [
        (definition, name)
        for definition, body in expected.items()
        for name, p in body["properties"].items()
        if "minimum" in str(p) or "maximum" in str(p)
    ]
    assert bounded
    for definition, name in bounded:
        got = schema["definitions"][definition]["properties"][name]
        assert got == expected[definition]["properties"][name]


def test_prefect_yaml_matches_the_table():
    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    entries = document["deployments"]
    by_entrypoint = {spec.entrypoint: spec for spec in SPECS}
    assert sorted(e["entrypoint"] for e in entries) == sorted(by_entrypoint)
    for entry in entries:
        spec = by_entrypoint[entry["entrypoint"]]
        assert entry["name"] == spec.name
        assert entry["description"] == spec.description
        assert entry["tags"] == list(spec.tags)
        schedules = [{"cron": spec.cron, "timezone": "UTC", "active": False}] if spec.cron else []
        assert entry.get("schedules", []) == schedules
        assert entry["work_pool"] == {"name": "segflow"}
        assert entry["parameters"] == spec.parameters(Path("data"))
        config_model(spec.load_flow()).model_validate(entry["parameters"]["config"])


def test_serve_without_a_server_exits_with_a_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # main() only fills in what is unset
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["--data-root", str(tmp_path)]) == 2
    assert "set PREFECT_API_URL" in capsys.readouterr().err


def test_cli_serve_options():
    ns = build_parser().parse_args(["serve", "--schedules", "--only", "ingest-dataset"])
    assert (ns.schedules, ns.only, ns.data_root) == (True, ["ingest-dataset"], None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--only", "no-such-flow"])
