"""Inference stage: input sources, tiling, block prediction, fan-out over Dask."""
