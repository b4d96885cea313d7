"""Every MLflow call: runs, the model registry, the pyfunc model, overlay images."""
