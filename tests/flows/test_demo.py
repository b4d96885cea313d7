"""The demo leads on: its closing commands name the model it registered, the one that
`segflow infer` finds by default, and run as printed (absolute paths, venv executables)."""

import shlex
from pathlib import Path

from segflow.flows.cli import DEMO_SETTINGS
from segflow.flows.config import InferConfig
from segflow.flows.config.pipeline import load_pipeline_config
from segflow.flows.pipeline import PipelineSummary, StageReport
from segflow.flows.summaries import next_commands

BIN = Path("/opt/segflow/.venv/bin")


def _summary(workdir: Path, promotion: dict | None) -> PipelineSummary:
    config = load_pipeline_config(str(workdir / "data"), str(workdir), overrides=DEMO_SETTINGS)
    result = {"run_id": "e1", "promotion": promotion, "report": {}}
    return PipelineSummary(
        workdir=str(workdir),
        store=config.store,
        model_uri=f"models:/{config.train.registered_model}/3",
        predictions=str(workdir / "predictions.zarr"),
        stages={"evaluate": StageReport(status="ran", seconds=1.0, result=result)},
    )


def test_demo_registers_the_model_infer_defaults_to(tmp_path):
    config = load_pipeline_config(str(tmp_path / "data"), str(tmp_path), overrides=DEMO_SETTINGS)
    default = InferConfig.model_fields["model"].default  # models:/<name>@newest
    assert default.removeprefix("models:/").split("@")[0] == config.train.registered_model


def test_next_commands_infer_a_new_image_with_the_champion(tmp_path):
    promoted = {"promoted": True, "reason": "better", "champion_version": "3"}
    lines = next_commands(_summary(tmp_path, promoted), "/h/prefect", BIN)
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    synth, infer, mlflow, prefect, napari = commands
    assert synth[:2] == [f"{BIN}/segflow", "synth"] and Path(synth[2]).is_absolute()
    assert infer[:3] == [f"{BIN}/segflow", "infer", f"{synth[2]}/images"]
    assert infer[infer.index("--model") + 1] == "models:/segflow-unet@champion"
    assert infer[infer.index("--workdir") + 1] == str(tmp_path)
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow and f"{BIN}/mlflow" in mlflow
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1" and "--workers" in mlflow
    assert prefect[prefect.index("--host") + 1] == "127.0.0.1" and f"{BIN}/prefect" in prefect
    assert napari[0] == f"{BIN}/napari" and napari[-1].startswith(infer[3])
    assert "http://127.0.0.1:5000" in "\n".join(lines) and "segflow[viewer]" in "\n".join(lines)


def test_next_commands_use_the_trained_model_without_a_champion(tmp_path):
    lines = next_commands(_summary(tmp_path, None), "/h/prefect", BIN)
    assert "--model models:/segflow-unet/3 " in "\n".join(lines)
