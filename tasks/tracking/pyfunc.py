"""MLflow "model from code" for a segflow bundle: logged as source, not as a pickle.

MLflow executes this file when the model is loaded; the weights come from the ``bundle``
artifact through :func:`segflow.tasks.storage.bundle.load_bundle` (weights-only). Input: raw pixels
``(N, C, H, W)`` float32 of any H and W; output: probabilities ``(N, K, H, W)``.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class SegflowUNet(PythonModel):
    """pyfunc wrapper: ``predict`` returns mean member probabilities."""

    def load_context(self, context) -> None:
        from segflow.tasks.storage.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        return self.bundle.predict(np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(SegflowUNet())
