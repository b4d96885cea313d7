"""Frozen, typed configuration shared by the CLI, the flows and the deployments.

Each flow takes one of these models as its only parameter, so the Prefect UI renders a form with
the descriptions and bounds below, and bad values fail before any work starts.
"""

from segflow.flows.config.evaluate import EvaluateConfig
from segflow.flows.config.infer import InferConfig
from segflow.flows.config.ingest import IngestConfig
from segflow.flows.config.pipeline import PipelineConfig
from segflow.flows.config.train import TrainConfig

__all__ = ["EvaluateConfig", "InferConfig", "IngestConfig", "PipelineConfig", "TrainConfig"]
