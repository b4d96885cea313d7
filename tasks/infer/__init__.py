"""Inference stage: input sources, tiling, block prediction over Dask, the prediction store."""
